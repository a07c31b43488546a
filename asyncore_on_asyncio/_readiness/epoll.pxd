# C types of the epoll source (see _readiness/__init__.pxd).
import cython

from asyncore_on_asyncio._readiness cimport Record, SourceBase


cdef class EpollSource(SourceBase):
    cdef public object _on_readable
    cdef public object _lock
    cdef public bint _stale
    cdef public object _epoll

    @cython.locals(old=long)
    cpdef update(self, Record rec, long events)
    @cython.locals(want=long)
    cpdef _apply(self, Record rec)
    @cython.locals(ready=dict, records=dict, rec=Record)
    cpdef collect(self, owner)
    @cython.locals(rec=Record, writers=list)
    cpdef _collect_writers(self, owner, dict ready)
