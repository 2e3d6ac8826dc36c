"""Helpers shared by the test modules: random arrays, gradient checks and a
small model family."""

import numpy as np
import sympy as sp

from layers.gradcheck import check_gradients
from layers.module import Module


def normal(shape, seed=0, dtype=np.float64):
    """A standard-normal array of ``shape``, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def away_from_zero(shape, seed=0, margin=0.1):
    """Like ``normal``, with every entry moved at least ``margin`` away from zero.

    For the activations, whose derivative jumps at zero: central differences
    across a kink estimate neither side's derivative.
    """
    values = normal(shape, seed)
    return values + margin * np.where(values < 0, -1.0, 1.0)


def randomize_parameters(layer, seed=0):
    """Fills each of the layer's parameters, in place, with standard-normal values.

    Parameters initialized to ones and zeros (a normalization's ``gamma`` and
    ``beta``) would let a gradient that forgets them pass.
    """
    for index, parameter in enumerate(layer.get_parameters()):
        parameter[...] = normal(parameter.shape, seed=seed + index)
    return layer


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


class LossOf(Module):
    """A criterion with its target fixed, seen as a module with a scalar output.

    ``backward`` scales the criterion's gradient by ``output_grad``, the chain
    rule for the scalar loss, so that ``check_gradients`` applies to criteria.
    """

    def __init__(self, criterion, target):
        super().__init__()
        self.criterion, self.target = criterion, target

    def _compute_output(self, input):
        return np.asarray(self.criterion.forward(input, self.target))

    def _compute_input_grad(self, input, output_grad):
        return output_grad * self.criterion.backward(input, self.target)

    def __repr__(self):
        return f"LossOf({self.criterion!r})"


def assert_loss_gradient_matches(criterion, input, target):
    """Checks a criterion's input gradient against central differences of its loss.

    The loss is a scalar, so its gradient is checked directly: the upstream
    gradient is 1.
    """
    report = check_gradients(LossOf(criterion, target), input, output_grad=np.ones(()))
    assert report.passed, str(report)
    return report


def spread_out(shape, seed=0, gap=0.05):
    """Distinct values ``gap`` apart or more, in random order, centred on zero.

    For a maximum: with no two entries closer than ``gap``, the central
    differences of a max pooling never step across a tie.
    """
    count = int(np.prod(shape))
    ranks = np.random.default_rng(seed).permutation(count).reshape(shape)
    return gap * (ranks - (count - 1) / 2)


def forward_backward(layer, input, output_grad):
    """One forward and one backward from zeroed parameter gradients.

    Returns:
        ``(output, input_grad, parameter_grads)``, copies of what the layer
        gave, so that later calls cannot change them.
    """
    layer.zero_grad()
    output = np.array(layer.forward(input))
    input_grad = np.array(layer.backward(input, output_grad))
    return output, input_grad, [np.array(grad) for grad in layer.get_parameters_grad()]


def assert_runs_agree(actual, expected, rtol=1e-12, atol=1e-14):
    """Checks two results of ``forward_backward`` against each other, entry by entry."""
    output, input_grad, grads = actual
    want_output, want_input_grad, want_grads = expected
    np.testing.assert_allclose(output, want_output, rtol=rtol, atol=atol)
    np.testing.assert_allclose(input_grad, want_input_grad, rtol=rtol, atol=atol)
    assert len(grads) == len(want_grads)
    for grad, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(grad, want, rtol=rtol, atol=atol)


def shifted_model(output_of, name):
    """A model with ``shift[n] = x[0, n]``, ``xs = x - shift``, ``mean`` and
    the output ``output_of(x, xs, mean, b, n)``."""
    from derivations import Model

    model = Model(name, "a test model", source="tests/helpers.py")
    B, N = model.size("B", example=5), model.size("N", example=3)
    b, n = model.index("b", B), model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    with model.mode("train"):
        shift = model.define("shift", (n,), x[0, n])
        xs = model.define("xs", (b, n), x[b, n] - shift[n])
        mean = model.define("mean", (n,), sp.Sum(xs[b, n], (b, 0, B - 1)) / B)
        model.define("y", (b, n), output_of(x, xs, mean, b, n))
    return model
