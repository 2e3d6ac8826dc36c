"""A 2-D convolution with zero 'same' padding and stride 1, written out by hand.

Notation: ``x`` is the input of shape (batch, in_channels, H, W), ``W`` the
kernel of shape (out_channels, in_channels, K, K) with K odd, ``b`` the bias of
shape (out_channels,), ``P = K // 2`` the padding and ``xp`` the input padded
with P zeros on each side of both spatial axes. Like every deep-learning
library, the layer cross-correlates (the kernel is not flipped)::

    y[b, o, h, w] = sum_{i, kh, kw} xp[b, i, h + kh, w + kw] * W[o, i, kh, kw] + b[o]

The gradients, with ``gp`` the output gradient padded with P zeros::

    input_grad[b, i, h, w] = sum_{o, kh, kw} gp[b, o, h + kh, w + kw]
                                              * W[o, i, K-1-kh, K-1-kw]
    grad_W[o, i, kh, kw]  += sum_{b, h, w} output_grad[b, o, h, w]
                                              * xp[b, i, h + kh, w + kw]
    grad_b[o]             += sum_{b, h, w} output_grad[b, o, h, w]

Every sum over (kh, kw) or (h, w) is one ``scipy.signal.correlate`` in 'valid'
mode, run once per pair of channels.
"""

import numpy as np
from scipy.signal import correlate

from layers.module import Module
from layers.random import make_generator
from layers.validation import expect_array, expect_output_grad, expect_positive_int

_NAME = "Conv2d"


class Conv2d(Module):
    """Convolution over (batch, channel, row, column) inputs, output the same size.

    Attributes:
        W: the kernel, shape (out_channels, in_channels, K, K).
        b: the bias, shape (out_channels,).
        gradW: the accumulated gradient of ``W``.
        gradb: the accumulated gradient of ``b``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, rng=None):
        """Creates the layer with parameters drawn uniformly from ±1/sqrt(in_channels).

        Args:
            in_channels: the number of input channels.
            out_channels: the number of output channels.
            kernel_size: K, the side of the square kernel; odd, so that the
                'same' padding K // 2 is symmetric.
            rng: None, an int seed or a ``numpy.random.Generator`` for the
                initial parameters.

        Raises:
            ValueError: a size is not a positive int, or ``kernel_size`` is even.
            TypeError: ``rng`` is of an unsupported type.
        """
        super().__init__()
        self.in_channels = expect_positive_int(_NAME, "in_channels", in_channels)
        self.out_channels = expect_positive_int(_NAME, "out_channels", out_channels)
        self.kernel_size = expect_positive_int(_NAME, "kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"{_NAME} expects an odd kernel_size, so that the 'same' padding is "
                f"symmetric; got {kernel_size}"
            )
        self.padding = self.kernel_size // 2

        generator = make_generator(rng, _NAME)
        stdv = 1 / np.sqrt(self.in_channels)
        shape = (
            self.out_channels,
            self.in_channels,
            self.kernel_size,
            self.kernel_size,
        )
        self.W = generator.uniform(-stdv, stdv, size=shape)
        self.b = generator.uniform(-stdv, stdv, size=self.out_channels)
        self.gradW = np.zeros_like(self.W)
        self.gradb = np.zeros_like(self.b)

    def _check_input(self, input):
        shape = ("batch", self.in_channels, "H", "W")
        array, _ = expect_array(_NAME, "input", input, shape)
        return array

    def _check_output_grad(self, input, output_grad):
        batch, _, height, width = input.shape
        output_shape = (batch, self.out_channels, height, width)
        return expect_output_grad(_NAME, output_grad, output_shape)

    def _pad(self, array):
        padding = self.padding
        return np.pad(array, ((0, 0), (0, 0), (padding, padding), (padding, padding)))

    def _compute_output(self, input):
        input = self._check_input(input)
        batch, _, height, width = input.shape
        input_padded = self._pad(input)

        output = np.zeros((batch, self.out_channels, height, width), dtype=input.dtype)
        for o in range(self.out_channels):
            for i in range(self.in_channels):
                # The kernel gets a batch axis of 1, so the batch axis is not mixed.
                kernel = self.W[o, i][None]
                output[:, o] += correlate(input_padded[:, i], kernel, mode="valid")
            output[:, o] += self.b[o]
        return output

    def _compute_input_grad(self, input, output_grad):
        input = self._check_input(input)
        output_grad = self._check_output_grad(input, output_grad)
        output_grad_padded = self._pad(output_grad)

        input_grad = np.zeros_like(input)
        for o in range(self.out_channels):
            for i in range(self.in_channels):
                # Each input pixel reached each output pixel through the kernel
                # offset seen from the other side, hence the flipped kernel.
                kernel = self.W[o, i, ::-1, ::-1][None]
                input_grad[:, i] += correlate(
                    output_grad_padded[:, o], kernel, mode="valid"
                )
        return input_grad

    def _update_parameters_grad(self, input, output_grad):
        input = self._check_input(input)
        output_grad = self._check_output_grad(input, output_grad)
        input_padded = self._pad(input)

        for o in range(self.out_channels):
            for i in range(self.in_channels):
                # Sliding the whole output gradient over the padded input sums
                # over batch, rows and columns at once: the result is (1, K, K).
                self.gradW[o, i] += correlate(
                    input_padded[:, i], output_grad[:, o], mode="valid"
                )[0]
        self.gradb += output_grad.sum(axis=(0, 2, 3))

    def get_parameters(self):
        return [self.W, self.b]

    def get_parameters_grad(self):
        return [self.gradW, self.gradb]

    def _extra_repr(self):
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}"
        )
