# C types of the dispatch (Cython's pure Python mode: _dispatch.py is the code).
import cython


@cython.locals(flags=long, events=long)
cpdef dispatch_batch(holder, map, list batch, dict revents, bint use_poll, handlers=*)
@cython.locals(flags=long)
cpdef _dispatch_poll(holder, map, list batch, dict revents, readwrite)
@cython.locals(flags=long, events=long, reads=list, writes=list, exceptional=list, invalid=list)
cpdef _dispatch_select(holder, map, list batch, dict revents, handlers)
