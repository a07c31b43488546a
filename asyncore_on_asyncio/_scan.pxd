# C types of the scanner (Cython's pure Python mode: _scan.py is the code).
import cython

from cpython.object cimport PyObject

from asyncore_on_asyncio._classflags cimport PerClass, replaced_on_instance
from asyncore_on_asyncio._readiness cimport Record, SourceBase

# Module constants and functions the scan uses every cycle, as C globals (no dict lookup).
cdef long INVALID, PRIORITY, WATCHED, WRITE, READ_ONLY
cdef Py_ssize_t _BLOCK
cdef object wanted_by_all
cdef PerClass _has_stock_predicates, _class_observes_urgent

cpdef bint _known(obj) except -1
cpdef bint _observes_urgent(obj) except -1
cpdef object _queue_of(obj)
@cython.locals(writes=bint)
cdef long _wanted_by_stock(obj, queue, long write_bits) except? -1


@cython.locals(found="PyObject *")
cdef object _get(map, key)


cdef class Scanner:
    cdef public object owner
    cdef public dict records
    cdef public SourceBase source
    cdef public object map
    cdef public long write_bits
    cdef public long long _stamp
    cdef public bint _full_scan_needed
    cdef public double _next_full_scan
    cdef public set _dirty
    cdef public list _dispatched
    cdef public bint _incremental
    cdef public dict _entries
    cdef public dict _queues
    cdef public dict _position
    cdef public dict _by_fd
    cdef public Py_ssize_t _next_position
    cdef public bint _steady
    cdef public list _keys
    cdef public list _objs
    cdef public list _wanted

    @cython.locals(keys=list, objs=list, wanted=list, previous=list, index=Py_ssize_t, events=long, before=long,
                   write_bits=long, verify=bint)
    cpdef scan(self, double now)
    @cython.locals(keys=list, objs=list, position=Py_ssize_t, index=Py_ssize_t, key="PyObject *", obj="PyObject *")
    cdef bint _holds_previous_entries(self) except -1
    @cython.locals(rec=Record)
    cdef _apply_change(self, Py_ssize_t index, long events)
    cdef Record _sync(self, long fd, obj, Record rec, long events)
    @cython.locals(records=dict, old=tuple, rec=Record, events=long)
    cdef bint _rescan_entry(self, key, obj) except -1
    @cython.locals(records=dict, source=SourceBase, stamp="long long", dirty=set, index=Py_ssize_t,
                   count=Py_ssize_t, all_known=bint, int_keys=bint, rec=Record, events=long)
    cpdef _apply_scan(self, list keys, list objs, list wanted, bint verify)
    @cython.locals(records=dict, source=SourceBase, entries=dict, queues=dict, write_bits=long, keys=list, dirty=set, old=tuple,
                   rec=Record, fd=long, events=long)
    cdef bint _scan_changed(self) except -1
    @cython.locals(records=dict, stamp="long long", rec=Record, regs=list, by_fd=dict, entries=dict, keys=list)
    cpdef batch(self, dict ready)
