# The kernel calls the compiled epoll source makes itself (Cython ships no epoll or poll
# .pxd).  Declarations only: nothing here is compiled into a module of its own.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t "epoll_data":
        int fd
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents

    int poll(pollfd *fds, unsigned long nfds, int timeout)
