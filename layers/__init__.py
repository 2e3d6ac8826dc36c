"""NumPy runtime of symbolic-backprop: the Module contract and its layers.

This package imports NumPy (and SciPy, for the reference convolution) only, so
that the generated layers can be used where SymPy is not installed.
"""

from layers.module import Criterion, Module

__all__ = ["Criterion", "Module"]
