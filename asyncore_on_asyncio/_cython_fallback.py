"""What ``import cython`` gives the engine modules where Cython is not installed.

The compiled modules test ``cython.compiled`` to take their C-level paths (Cython makes
it a compile-time constant); run as plain Python it is ``False`` here, as in Cython's own
shadow module.
"""

compiled = False
