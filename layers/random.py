"""Random draws shared by the reference and the generated layers.

Both Dropout implementations draw their keep mask through ``draw_keep_mask``
from a generator made by ``make_generator``, so the same seed gives the same
mask in both and their outputs can be compared element by element.
"""

import numbers

import numpy as np


def make_generator(rng, layer="make_generator"):
    """Turns the ``rng`` argument of a layer into a NumPy generator.

    Args:
        rng: None for fresh entropy, a non-negative int seed, or a
            ``numpy.random.Generator``, which is used as it is (not copied), so
            that several layers can share one stream.
        layer: the name of the layer asking, for messages.

    Returns:
        A ``numpy.random.Generator``.

    Raises:
        TypeError: ``rng`` is of another type (a bool is refused too: it is
            almost always a mistake for a seed).
        ValueError: ``rng`` is a negative int.
    """
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(
                f"{layer} expects rng as a non-negative int seed; got {rng}"
            )
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{layer} expects rng as None, an int seed or a "
        f"numpy.random.Generator; got {type(rng).__name__} {rng!r}"
    )


def draw_keep_mask(generator, shape, p, dtype):
    """Draws a Dropout mask: 1 where an element is kept, 0 where it is dropped.

    Each element is dropped with probability ``p``: ``generator.random`` is
    uniform on [0, 1), so ``p = 0`` keeps everything and ``p = 1`` drops
    everything.

    Args:
        generator: a ``numpy.random.Generator``; advanced by one draw per element.
        shape: the shape of the mask.
        p: the drop probability, in [0, 1].
        dtype: the dtype of the mask, normally the input's.

    Returns:
        An array of ``shape`` and ``dtype`` holding 0 and 1.
    """
    return (generator.random(shape) >= p).astype(dtype)
