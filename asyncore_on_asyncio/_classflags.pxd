# C types of the per-class facts (Cython's pure Python mode: _classflags.py is the code).
# Asked for every new dispatcher the scan registers: compiled, a check costs C calls only.
import cython

cdef class PerClass:
    cdef object _compute
    cdef dict _flags

    @cython.locals(entry=tuple)
    cpdef bint of(self, type cls) except -1


cpdef bint replaced_on_instance(obj, str name) except -1
