# C types of the driver (Cython's pure Python mode: _driver.py is the code).
import cython

from cpython.object cimport PyObject

from asyncore_on_asyncio._readiness cimport SourceBase
from asyncore_on_asyncio._scan cimport Scanner


# Module constants and functions every cycle uses, as C globals (no dict lookup).
cdef long POLLNVAL, POLLPRI, PRIORITY, READ, WRITE, SELECT_READ, SELECT_WRITE, _DONE, _WAIT, _YIELD
cdef object thread_loops, dispatching, read, write, _exception, readwrite, monotonic, _set_running_loop, _get_running_loop


cdef class Driver:
    cdef public object engine
    cdef public object loop
    cdef public object map
    cdef public dict records
    cdef public bint in_cycle
    cdef public bint waiting
    cdef public bint dispatching
    cdef public double cycles_began
    cdef public Scanner scanner
    cdef public object _measured_by
    cdef public object _scan
    cdef public object _dispatch_batch
    cdef public object _timeout
    cdef public bint _use_poll
    cdef public object _count
    cdef public object _deadline
    cdef public bint _mid_cycle
    cdef public bint _rescan
    cdef public object _timer
    cdef public double _timer_due
    cdef public object _wake_at
    cdef public object _step_handle
    cdef public object _on_done
    cdef public list _failures

    cpdef begin(self, timeout, bint use_poll, count)
    cpdef end(self)

    @cython.locals(scanner=Scanner, source=SourceBase, now=double, burst_end=double, ready=dict, batch=list)
    cpdef int cycles(self) except? -1
    @cython.locals(events=long, flags=long)
    cdef _dispatch_one(self, tuple entry, dict revents)


cdef bint _holds(map, key, obj) except -1

cdef object _id_of(map)

cdef object _this_threads_engine()

@cython.locals(driver=Driver, forked=bint, drivers=dict)
cpdef run(map, timeout, bint use_poll, count)
