# C types of the epoll source (see _readiness/__init__.pxd).
import cython

from asyncore_on_asyncio._readiness cimport Record, SourceBase
from asyncore_on_asyncio._readiness._kernel cimport epoll_event, pollfd


# Module constants the hot paths use, as C globals (no dict lookup).
cdef long INVALID, POLLOUT, PRIORITY, READ, WATCHED, WRITE, _KERNEL_BITS, _KERNEL_BITS_URGENT
cdef tuple _MASKS
cdef object _EPOLL_TYPE


cdef class EpollSource(SourceBase):
    cdef public object _on_readable
    cdef public object _lock
    cdef public bint _stale
    cdef public object _epoll
    cdef public int _epoll_fd
    cdef bytearray _event_buffer
    cdef epoll_event *_events
    cdef Py_ssize_t _capacity
    cdef bytearray _pollfd_buffer
    cdef pollfd *_pollfds
    cdef Py_ssize_t _pollfd_capacity

    @cython.locals(old=long)
    cpdef update(self, Record rec, long events)
    @cython.locals(want=long)
    cpdef _apply(self, Record rec)
    @cython.locals(ready=dict, records=dict, count=int, index=int, rec=Record)
    cpdef dict collect(self, owner)
    @cython.locals(rec=Record)
    cdef inline _take(self, owner, dict ready, long fd, long flags)
    @cython.locals(count=int)
    cdef int _wait(self, int maxevents) except -1
    @cython.locals(writers=dict, rec=Record, count=Py_ssize_t, index=Py_ssize_t, fds="pollfd *", flags=int, fd=int)
    cdef _poll_writers(self, owner, dict ready)
    @cython.locals(rec=Record, writers=list)
    cpdef _collect_writers(self, owner, dict ready)
    cpdef _would_block(self, Record rec)
