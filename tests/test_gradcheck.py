"""Tests of the numerical gradient checker, including that it can fail."""

import numpy as np
import pytest

from layers.gradcheck import (
    check_gradients,
    numerical_input_grad,
    numerical_parameter_grads,
)
from layers.module import Module
from layers.reference import ChannelwiseScaling, Dropout
from tests.helpers import normal


class Cube(Module):
    """y = x ** 3 elementwise, for any shape: a gradient known in closed form."""

    def _compute_output(self, input):
        return input**3

    def _compute_input_grad(self, input, output_grad):
        return 3 * input**2 * output_grad


class ScalingWithoutGamma(ChannelwiseScaling):
    """Forgets the factor gamma in the input gradient."""

    def _compute_input_grad(self, input, output_grad):
        return output_grad.copy()


class ScalingWithoutInput(ChannelwiseScaling):
    """Forgets the factor x in the gradient of gamma."""

    def _update_parameters_grad(self, input, output_grad):
        self.gradGamma += output_grad.sum(axis=0)
        self.gradBeta += output_grad.sum(axis=0)


class ScalingWithWrongShape(ChannelwiseScaling):
    """Returns an input gradient that broadcasts but has the wrong shape."""

    def _compute_input_grad(self, input, output_grad):
        return (output_grad * self.gamma).sum(axis=0)


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 1, 3, 2)])
def test_numerical_input_grad_matches_closed_form_for_any_shape(shape):
    x, output_grad = normal(shape), normal(shape, seed=1)
    numerical = numerical_input_grad(Cube(), x, output_grad)
    np.testing.assert_allclose(numerical, 3 * x**2 * output_grad, rtol=1e-7, atol=1e-9)


def test_numerical_input_grad_leaves_the_input_alone():
    x = normal((3, 2))
    copy = x.copy()
    numerical_input_grad(Cube(), x, normal((3, 2), seed=1))
    assert np.array_equal(x, copy)


def test_numerical_parameter_grads_match_closed_form_and_restore_parameters():
    layer = ChannelwiseScaling(3, rng=0)
    x, output_grad = normal((4, 3)), normal((4, 3), seed=1)
    gamma, beta = layer.gamma, layer.beta
    saved = [gamma.copy(), beta.copy()]

    grad_gamma, grad_beta = numerical_parameter_grads(layer, x, output_grad)

    np.testing.assert_allclose(grad_gamma, (output_grad * x).sum(axis=0), rtol=1e-7)
    np.testing.assert_allclose(grad_beta, output_grad.sum(axis=0), rtol=1e-7)
    assert layer.gamma is gamma and layer.beta is beta
    assert np.array_equal(gamma, saved[0]) and np.array_equal(beta, saved[1])


def test_check_gradients_passes_on_a_correct_module():
    report = check_gradients(ChannelwiseScaling(4, rng=0), normal((5, 4)), rng=1)
    assert report.passed, str(report)
    assert [c.name for c in report.comparisons] == [
        "input_grad",
        "grad_gamma",
        "grad_beta",
    ]
    assert report.max_abs_error < 1e-8
    assert "passed" in str(report) and "grad_gamma" in str(report)


def test_check_gradients_works_without_parameters():
    report = check_gradients(Cube(), normal((2, 3, 2)), rng=0)
    assert report.passed, str(report)
    assert [c.name for c in report.comparisons] == ["input_grad"]


@pytest.mark.parametrize(
    ("module_class", "wrong"),
    [
        (ScalingWithoutGamma, {"input_grad"}),
        (ScalingWithoutInput, {"grad_gamma"}),
        (ScalingWithWrongShape, {"input_grad"}),
    ],
)
def test_check_gradients_fails_on_a_wrong_module(module_class, wrong):
    report = check_gradients(module_class(4, rng=0), normal((5, 4)), rng=1)
    assert not report.passed
    assert {c.name for c in report.comparisons if not c.passed} == wrong
    assert "FAILED" in str(report)


def test_check_gradients_uses_the_given_output_grad():
    layer = ChannelwiseScaling(2, rng=0)
    x = normal((3, 2))
    check_gradients(layer, x, output_grad=np.ones((3, 2)))
    np.testing.assert_allclose(layer.gradBeta, [3.0, 3.0])


def test_check_gradients_zeroes_parameter_grads_first():
    layer = ChannelwiseScaling(2, rng=0)
    layer.gradGamma += 100.0
    report = check_gradients(layer, normal((3, 2)), rng=0)
    assert report.passed, str(report)


def test_check_gradients_refuses_lower_precision():
    with pytest.raises(TypeError, match=r"check_gradients expects input as a float64"):
        check_gradients(Cube(), normal((2, 2)).astype(np.float32))
    layer = ChannelwiseScaling(2, rng=0)
    layer.gamma = layer.gamma.astype(np.float32)
    with pytest.raises(TypeError, match=r"parameter 0 of ChannelwiseScaling"):
        check_gradients(layer, normal((3, 2)))
    with pytest.raises(TypeError, match=r"numerical_input_grad expects output_grad"):
        numerical_input_grad(Cube(), normal((2,)), np.ones(2, dtype=np.float32))


def test_check_gradients_rejects_output_grad_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"output_grad shaped like the output"):
        check_gradients(Cube(), normal((2, 3)), output_grad=normal((3, 2)))


def test_check_gradients_refuses_a_random_forward():
    with pytest.raises(ValueError, match=r"deterministic forward.*Dropout"):
        check_gradients(Dropout(0.5, rng=0), normal((4, 5)))
