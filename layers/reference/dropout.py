"""Inverted dropout, written out by hand.

Notation: ``x`` is the input of any shape, ``p`` the drop probability, ``mask``
a 0/1 array shaped like ``x`` drawn in training mode (1 = kept) and
``scale = 1 / (1 - p)``, or 0 when ``p = 1`` (everything is dropped)::

    y          = x * mask * scale
    input_grad = output_grad * mask * scale

In evaluation mode the layer is the identity, forward and backward.
"""

from layers.module import Module
from layers.random import draw_keep_mask, make_generator
from layers.validation import expect_array, expect_output_grad, expect_probability

_NAME = "Dropout"


def _check_input(input):
    # Dropout takes any shape with a batch axis; expect_array checks the rest.
    array, _ = expect_array(_NAME, "input", input, ("batch", "..."))
    return array


class Dropout(Module):
    """Zeroes each element with probability ``p`` and rescales the survivors.

    Attributes:
        p: the drop probability.
        scale: the factor applied to kept elements.
        generator: the ``numpy.random.Generator`` the masks are drawn from.
        mask: the keep mask of the last training forward; None before it.
    """

    def __init__(self, p=0.5, rng=None):
        """Creates the layer.

        Args:
            p: the drop probability, in [0, 1].
            rng: None, an int seed or a ``numpy.random.Generator``; the same
                seed gives the same sequence of masks.

        Raises:
            ValueError: ``p`` is not a real number in [0, 1].
            TypeError: ``rng`` is of an unsupported type.
        """
        super().__init__()
        self.p = expect_probability(_NAME, "p", p)
        # 1 / (1 - p) has no value at p = 1; every element is dropped there anyway.
        self.scale = 1 / (1 - self.p) if self.p < 1 else 0.0
        self.generator = make_generator(rng, _NAME)
        self.mask = None

    def _compute_output(self, input):
        input = _check_input(input)
        if not self.training:
            return input.copy()
        self.mask = draw_keep_mask(self.generator, input.shape, self.p, input.dtype)
        return input * self.mask * self.scale

    def _compute_input_grad(self, input, output_grad):
        input = _check_input(input)
        output_grad = expect_output_grad(_NAME, output_grad, input.shape)
        if not self.training:
            return output_grad.astype(input.dtype)
        if self.mask is None:
            raise ValueError(
                f"{_NAME}.backward in training mode needs the mask of a forward "
                "pass; call forward first"
            )
        if self.mask.shape != input.shape:
            raise ValueError(
                f"{_NAME}.backward expects input of the last forward's shape "
                f"{self.mask.shape}; got {input.shape}"
            )
        # The mask is reused, never redrawn: backward must differentiate the
        # forward that actually ran.
        input_grad = output_grad * self.mask * self.scale
        return input_grad.astype(input.dtype, copy=False)

    def _extra_repr(self):
        return f"p={self.p}"
