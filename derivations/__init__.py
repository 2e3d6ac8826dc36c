"""SymPy models of layers in index notation, and the engine that derives them.

See ``derivations.notation`` for the notation and the vocabulary.
"""

from derivations.derive import derive_backward, derive_jacobian
from derivations.notation import Model, ModelError

__all__ = ["Model", "ModelError", "derive_backward", "derive_jacobian"]
