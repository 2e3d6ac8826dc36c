"""Helpers shared by the test modules: random arrays and gradient checks."""

import numpy as np

from layers.gradcheck import check_gradients


def normal(shape, seed=0, dtype=np.float64):
    """A standard-normal array of ``shape``, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class ReplayGenerator:
    """Returns the same uniform numbers on every call, so Dropout's mask stays fixed.

    Dropout draws a new mask on every training forward; the finite differences of
    ``check_gradients`` need the same mask in all of them.
    """

    def __init__(self, seed):
        self.seed = seed

    def random(self, shape):
        return np.random.default_rng(self.seed).random(shape)


def assert_gradients_match(module, input, seed=1):
    """Checks every gradient of ``module`` against central differences.

    The upstream gradient is drawn from the standard normal distribution with
    ``seed``. Returns the report, whose comparisons name the gradients checked.
    """
    report = check_gradients(module, input, rng=seed)
    assert report.passed, str(report)
    return report


def assert_identity_bit_for_bit(module, input, output_grad):
    """Checks that ``module`` passes the input and the gradient through unchanged.

    Equal bit for bit and of the same dtype; ``np.array_equal``, not a tolerance.
    """
    output = module.forward(input)
    input_grad = module.backward(input, output_grad)
    assert output.dtype == input_grad.dtype == input.dtype
    assert np.array_equal(output, input)
    assert np.array_equal(input_grad, output_grad)
