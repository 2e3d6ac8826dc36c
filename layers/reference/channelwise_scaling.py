"""A learnable scale and shift per feature, written out by hand.

Notation: ``x`` is the input of shape (batch, n), ``gamma`` and ``beta`` the
parameters of shape (n,)::

    y[b, n] = x[b, n] * gamma[n] + beta[n]

    input_grad[b, n] = output_grad[b, n] * gamma[n]
    grad_gamma[n]   += sum_b output_grad[b, n] * x[b, n]
    grad_beta[n]    += sum_b output_grad[b, n]
"""

import numpy as np

from layers.module import Module
from layers.random import make_generator
from layers.validation import expect_array, expect_output_grad, expect_positive_int

_NAME = "ChannelwiseScaling"


class ChannelwiseScaling(Module):
    """Multiplies each feature by ``gamma`` and adds ``beta``.

    Attributes:
        gamma: the scale, shape (n_out,).
        beta: the shift, shape (n_out,).
        gradGamma: the accumulated gradient of ``gamma``.
        gradBeta: the accumulated gradient of ``beta``.
    """

    def __init__(self, n_out, rng=None):
        """Creates the layer with parameters drawn uniformly from ±1/sqrt(n_out).

        Args:
            n_out: the number of features.
            rng: None, an int seed or a ``numpy.random.Generator`` for the
                initial parameters.

        Raises:
            ValueError: ``n_out`` is not a positive int.
            TypeError: ``rng`` is of an unsupported type.
        """
        super().__init__()
        self.n_out = expect_positive_int(_NAME, "n_out", n_out)
        generator = make_generator(rng, _NAME)
        stdv = 1 / np.sqrt(self.n_out)
        self.gamma = generator.uniform(-stdv, stdv, size=self.n_out)
        self.beta = generator.uniform(-stdv, stdv, size=self.n_out)
        self.gradGamma = np.zeros_like(self.gamma)
        self.gradBeta = np.zeros_like(self.beta)

    def _check_input(self, input):
        array, _ = expect_array(_NAME, "input", input, ("batch", self.n_out))
        return array

    def _compute_output(self, input):
        input = self._check_input(input)
        # The parameters are float64; the output keeps the input's dtype.
        return (input * self.gamma + self.beta).astype(input.dtype, copy=False)

    def _compute_input_grad(self, input, output_grad):
        input = self._check_input(input)
        output_grad = expect_output_grad(_NAME, output_grad, input.shape)
        return (output_grad * self.gamma).astype(input.dtype, copy=False)

    def _update_parameters_grad(self, input, output_grad):
        input = self._check_input(input)
        output_grad = expect_output_grad(_NAME, output_grad, input.shape)
        self.gradGamma += np.sum(output_grad * input, axis=0)
        self.gradBeta += np.sum(output_grad, axis=0)

    def get_parameters(self):
        return [self.gamma, self.beta]

    def get_parameters_grad(self):
        return [self.gradGamma, self.gradBeta]

    def _extra_repr(self):
        return f"n_out={self.n_out}"
