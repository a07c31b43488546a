# C types of the dispatch order (Cython's pure Python mode: _dispatch.py is the code).  The
# events are sorted into select()'s sets in C; _handlers.call_each (interpreted) calls them.
import cython

# Imported constants and functions, as C globals (no dict lookup).
cdef long POLLNVAL, POLLPRI, PRIORITY, READ, WRITE
cdef object call_each, call_each_polled

@cython.locals(polled=list, fd=long, flags=long)
cdef _dispatch_poll(holder, map, list batch, dict revents, readwrite)
@cython.locals(select_read=long, select_write=long, reads=list, writes=list, exceptional=list, invalid=list,
               entry=tuple, fd=long, flags=long, events=long)
cdef _dispatch_select(holder, map, list batch, dict revents, handlers)
