"""Selections the generated passes make: values where a condition holds, else 0.

``np.where(condition, values, 0)`` branches on every element, and in float32
NumPy runs it several times slower than a product: a ReLU's backward spends
most of its time there. ``select_or_zero`` multiplies by the condition instead
and takes ``np.where`` only when the product differs from it, which is when
``values`` holds inf or NaN where the condition fails (``inf * 0`` is NaN, the
selection gives 0).
"""

import numpy as np


def select_or_zero(condition, values):
    """``values`` where ``condition`` holds, else zero, in ``values``' dtype.

    Args:
        condition: booleans, broadcast against ``values``.
        values: an array, or a NumPy scalar of the pass's dtype.

    Returns:
        A new array, the same as ``np.where(condition, values, 0)`` with 0 of
        ``values``' dtype, NaN and inf included; every zero is +0.0 (a kept
        -0.0 too, which np.where would keep).
    """
    with np.errstate(invalid="ignore"):
        product = np.multiply(values, condition)
    if np.isnan(product).any():
        # A NaN of the product may be inf * 0 or NaN * 0 that the selection
        # drops: the branching form gives exactly that.
        product = np.where(condition, values, product.dtype.type(0))
    # A negative value times False is -0.0; np.where (and PyTorch) give +0.0.
    product += 0.0
    return product
