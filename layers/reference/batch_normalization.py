"""Batch normalization without scale and shift, written out by hand.

Notation: ``x`` is the input of shape (batch, n), ``B`` the batch size, ``eps``
the class constant ``EPS``. In training mode, per feature n::

    mean = sum_b x[b] / B
    var  = sum_b (x[b] - mean) ** 2 / B          (biased, computed in two passes)
    y[b] = (x[b] - mean) / sqrt(var + eps)

and the moving statistics follow ``moving = moving * alpha + batch * (1 - alpha)``
with the biased batch variance. In evaluation mode the moving statistics take the
place of the batch ones, so each output depends on its own input only and::

    input_grad = output_grad / sqrt(moving_variance + eps)
"""

import numpy as np

from layers.module import Module
from layers.validation import expect_array, expect_output_grad, expect_probability

_NAME = "BatchNormalization"


class BatchNormalization(Module):
    """Normalizes each feature over the batch; no learnable parameters.

    Attributes:
        alpha: weight of the old value in the moving-average update.
        moving_mean: per-feature moving mean; None until the first forward.
        moving_variance: per-feature moving biased variance; None until the
            first forward.
    """

    EPS = 1e-3

    def __init__(self, alpha=0.0):
        """Creates the layer.

        Args:
            alpha: in [0, 1]; 0 keeps only the last batch's statistics.

        Raises:
            ValueError: ``alpha`` is not a real number in [0, 1].
        """
        super().__init__()
        self.alpha = expect_probability(_NAME, "alpha", alpha)
        self.moving_mean = None
        self.moving_variance = None

    def _check_input(self, input):
        # Once the moving statistics exist, they fix the number of features.
        bound = {} if self.moving_mean is None else {"n": self.moving_mean.shape[0]}
        array, _ = expect_array(_NAME, "input", input, ("batch", "n"), bound)
        return array

    def _ensure_moving_statistics(self, input):
        # The feature count and dtype are only known from the first input.
        if self.moving_mean is None:
            self.moving_mean = np.zeros(input.shape[1], dtype=input.dtype)
            self.moving_variance = np.ones(input.shape[1], dtype=input.dtype)

    def _compute_output(self, input):
        input = self._check_input(input)
        self._ensure_moving_statistics(input)

        if not self.training:
            std = np.sqrt(self.moving_variance + self.EPS)
            # The moving statistics keep the dtype of the first input; the output
            # follows the current one.
            return ((input - self.moving_mean) / std).astype(input.dtype, copy=False)

        batch_mean, centered = _centre(input)
        batch_variance = np.mean(centered**2, axis=0)
        output = centered / np.sqrt(batch_variance + self.EPS)

        old_weight, new_weight = self.alpha, 1 - self.alpha
        self.moving_mean = self.moving_mean * old_weight + batch_mean * new_weight
        self.moving_variance = (
            self.moving_variance * old_weight + batch_variance * new_weight
        )
        return output

    def _compute_input_grad(self, input, output_grad):
        input = self._check_input(input)
        output_grad = expect_output_grad(_NAME, output_grad, input.shape)
        self._ensure_moving_statistics(input)

        if not self.training:
            std = np.sqrt(self.moving_variance + self.EPS)
            return (output_grad / std).astype(input.dtype, copy=False)

        batch_size = input.shape[0]
        _, centered = _centre(input)
        std = np.sqrt(np.mean(centered**2, axis=0) + self.EPS)
        output = centered / std

        # Per feature n, the Jacobian of the column y[:, n] w.r.t. x[:, n] is
        # (centering - y y^T / B) / std: the first term from subtracting the mean,
        # the second from the variance moving with every input. It is symmetric,
        # so the vector-Jacobian product is jacobian @ output_grad[:, n].
        centering = np.eye(batch_size, dtype=input.dtype) - 1 / batch_size
        outer = np.einsum("bn,cn->nbc", output, output)
        jacobian = (centering - outer / batch_size) / std[:, None, None]
        return np.einsum("nbc,cn->bn", jacobian, output_grad)

    def _extra_repr(self):
        return f"alpha={self.alpha}"


def _centre(input):
    """The batch mean and the centred input, exact for a constant feature.

    Subtracting the first sample first makes a constant feature exactly zero
    (its mean would not be: 0.1 + 0.1 + 0.1 is not 0.3) and keeps float32
    sums of large values from drifting.
    """
    shifted = input - input[0]
    shifted_mean = shifted.mean(axis=0)
    return shifted_mean + input[0], shifted - shifted_mean
