# The C types of the readiness records and the sources' shared part (Cython's pure Python
# mode: __init__.py is the code, this file types it when the core is compiled).
import cython


cdef class Record:
    cdef public bint blocked
    cdef public long events
    cdef public long fd
    cdef public Py_ssize_t index
    cdef public object key
    cdef public long kind
    cdef public long mask
    cdef public object obj
    cdef public object owner
    cdef public long long seen
    cdef public object sock
    cdef public bint urgent


cdef class SourceBase:
    cdef public object loop
    cdef public dict _records
    cdef public dict _writers
    cdef public dict _unwatchable
    cdef public unsigned long long registers
    cdef public unsigned long long modifies
    cdef public unsigned long long unregisters
    cdef public unsigned long long polls
    cdef public unsigned long long writer_polls

    @cython.locals(old=Record, rec=Record)
    cpdef Record register(self, owner, long fd, obj, sock, long events, bint urgent)
    @cython.locals(fd=long)
    cpdef update(self, Record rec, long events)
    @cython.locals(fd=long)
    cpdef remove(self, Record rec)
    cpdef _apply(self, Record rec)
    cpdef _unwatch(self, Record rec)
    cpdef dict collect(self, owner)
    @cython.locals(rec=Record)
    cpdef _collect_unwatchable(self, owner, dict ready)
