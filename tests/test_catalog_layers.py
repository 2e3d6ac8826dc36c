"""The catalog's generated layers against central differences and NumPy formulas.

Every layer and every gradient (the input and each parameter) is compared with
central differences in float64 under a random ``output_grad``; a criterion's
loss is a scalar, so its gradient is compared directly. Parameters are random
too: a normalization's ``gamma`` of ones would hide a gradient that forgets it.
Inputs stay away from the kinks of the activations, where central differences
estimate neither side's derivative; the gradient at a kink is tested on its own.
"""

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest

from layers import generated
from tests.catalog_cases import (
    CONV_GRID,
    EXTREME_LOGITS,
    IMAGE,
    class_indices,
    conv2d,
    conv_id,
    conv_output_size,
    log_probabilities,
    one_hot,
    stable_log_softmax,
    stable_softmax,
)
from tests.helpers import (
    assert_gradients_match,
    assert_loss_gradient_matches,
    away_from_zero,
    normal,
    randomize_parameters,
)


def layer_case(build, shape, name):
    return pytest.param(build, shape, id=name)


LAYER_CASES = [
    layer_case(lambda: generated.Linear(4, 3, rng=0), (5, 4), "linear_4_3"),
    layer_case(lambda: generated.Linear(1, 2, rng=0), (3, 1), "linear_1_2"),
    layer_case(lambda: generated.Linear(6, 1, rng=0), (2, 6), "linear_6_1"),
    layer_case(generated.ReLU, (3, 4), "relu"),
    layer_case(generated.ReLU, (2, 3, 2, 2), "relu_4d"),
    layer_case(generated.LeakyReLU, (3, 4), "leaky_relu"),
    layer_case(lambda: generated.LeakyReLU(slope=0.2), (2, 3, 4), "leaky_relu_0.2"),
    layer_case(lambda: generated.LeakyReLU(slope=1.5), (3, 4), "leaky_relu_1.5"),
    layer_case(generated.ELU, (3, 4), "elu"),
    layer_case(lambda: generated.ELU(alpha=0.5), (2, 3, 4), "elu_0.5"),
    layer_case(lambda: generated.ELU(alpha=2.5), (3, 4), "elu_2.5"),
    layer_case(generated.SoftPlus, (3, 4), "softplus"),
    layer_case(generated.SoftPlus, (2, 2, 3), "softplus_3d"),
    layer_case(generated.SoftMax, (4, 3), "softmax"),
    layer_case(generated.SoftMax, (1, 6), "softmax_1x6"),
    layer_case(generated.SoftMax, (3, 1), "softmax_one_class"),
    layer_case(generated.LogSoftMax, (4, 3), "log_softmax"),
    layer_case(generated.LogSoftMax, (1, 6), "log_softmax_1x6"),
    layer_case(lambda: generated.LayerNormalization(5), (4, 5), "layer_norm_5"),
    layer_case(lambda: generated.LayerNormalization(2), (3, 2), "layer_norm_2"),
    layer_case(generated.Flatten, (2, 3, 4), "flatten_3d"),
    layer_case(generated.Flatten, (2, 2, 3, 2), "flatten_4d"),
    layer_case(generated.Flatten, (3, 5), "flatten_2d"),
]
POOL_GRID = [
    layer_case(
        functools.partial(generated.MaxPool2d, kernel_size, stride),
        (2, 2, 7, 6),
        f"max_pool_k{kernel_size}_s{stride}",
    )
    for kernel_size, stride in itertools.product((2, 3), (None, 1, 2))
]


# Every layer: generated == central differences


@pytest.mark.parametrize(("build", "shape"), LAYER_CASES + POOL_GRID)
def test_catalog_gradients_match_finite_differences(build, shape):
    layer = randomize_parameters(build(), seed=5)
    report = assert_gradients_match(layer, 2.0 * away_from_zero(shape))
    assert len(report.comparisons) == 1 + len(layer.get_parameters())


@pytest.mark.parametrize("config", CONV_GRID, ids=conv_id)
def test_conv2d_gradients_match_finite_differences(config):
    layer = conv2d(config)
    x = normal(IMAGE)
    output = layer.forward(x)
    height, width = (conv_output_size(size, config) for size in IMAGE[2:])
    assert output.shape == (2, 3, height, width)

    report = assert_gradients_match(layer, x)
    names = [comparison.name for comparison in report.comparisons]
    bias = config[-1]
    assert names == ["input_grad", "grad_W", *(["grad_b"] if bias else [])]


@pytest.mark.parametrize(("build", "shape"), LAYER_CASES + POOL_GRID)
def test_catalog_layers_evaluate_like_they_train(build, shape):
    """None of these layers has state or randomness: the modes agree exactly."""
    layer = randomize_parameters(build(), seed=5)
    x = 2.0 * away_from_zero(shape)
    output = layer.forward(x)
    output_grad = normal(output.shape, seed=1)
    input_grad = layer.backward(x, output_grad)
    layer.evaluate()
    np.testing.assert_array_equal(layer.forward(x), output)
    np.testing.assert_array_equal(layer.backward(x, output_grad), input_grad)


# Activations


def test_activations_compute_their_formulas():
    x = 3.0 * normal((4, 5))
    formulas = [
        (generated.ReLU(), np.maximum(x, 0)),
        (generated.LeakyReLU(), np.where(x > 0, x, 0.03 * x)),
        (generated.LeakyReLU(slope=0.2), np.where(x > 0, x, 0.2 * x)),
        (generated.ELU(), np.where(x > 0, x, np.expm1(x))),
        (generated.ELU(alpha=0.5), np.where(x > 0, x, 0.5 * np.expm1(x))),
        (generated.SoftPlus(), np.logaddexp(0, x)),
    ]
    # The absolute tolerance admits SoftPlus's rounding in its tail (see below).
    for layer, expected in formulas:
        np.testing.assert_allclose(
            layer.forward(x), expected, rtol=1e-14, atol=1e-15, err_msg=f"{layer!r}"
        )


@pytest.mark.parametrize(
    ("build", "slope_at_zero"),
    [
        (generated.ReLU, 0.0),
        (generated.LeakyReLU, 0.03),
        (lambda: generated.LeakyReLU(slope=0.2), 0.2),
        (generated.ELU, 1.0),
        (lambda: generated.ELU(alpha=0.5), 0.5),
        (generated.SoftPlus, 0.5),
    ],
    ids=["relu", "leaky_relu", "leaky_relu_0.2", "elu", "elu_0.5", "softplus"],
)
def test_activation_gradient_at_zero_is_pytorchs(build, slope_at_zero):
    """At the kink the derivative is the negative side's, as PyTorch takes it:
    0 for ReLU, the slope for LeakyReLU, alpha for ELU."""
    layer = build()
    x, output_grad = np.zeros((2, 3)), normal((2, 3), seed=1)
    layer.forward(x)
    np.testing.assert_allclose(
        layer.backward(x, output_grad), slope_at_zero * output_grad, rtol=1e-15
    )


def test_softplus_is_finite_and_correct_at_extreme_inputs():
    x = np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])
    output_grad = normal(x.shape, seed=1)
    layer = generated.SoftPlus()
    output = layer.forward(x)
    assert np.isfinite(output).all()
    np.testing.assert_allclose(output, np.logaddexp(0, x), rtol=1e-15, atol=1e-16)
    sigmoid = np.exp(-np.logaddexp(0, -x))
    np.testing.assert_allclose(
        layer.backward(x, output_grad), output_grad * sigmoid, rtol=1e-15
    )


# SoftMax and LogSoftMax


def softmax_vjp(x, output_grad):
    softmax = stable_softmax(x)
    return softmax * (
        output_grad - np.sum(output_grad * softmax, axis=1, keepdims=True)
    )


def log_softmax_vjp(x, output_grad):
    return output_grad - stable_softmax(x) * output_grad.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("logits", ["moderate", "extreme"])
@pytest.mark.parametrize(
    ("build", "formula", "vjp"),
    [
        (generated.SoftMax, stable_softmax, softmax_vjp),
        (generated.LogSoftMax, stable_log_softmax, log_softmax_vjp),
    ],
    ids=["softmax", "log_softmax"],
)
def test_softmax_is_finite_and_correct(build, formula, vjp, logits):
    x = EXTREME_LOGITS if logits == "extreme" else normal((4, 3))
    output_grad = normal(x.shape, seed=1)
    layer = build()
    output = layer.forward(x)
    input_grad = layer.backward(x, output_grad)

    assert np.isfinite(output).all() and np.isfinite(input_grad).all()
    # Within two units in the last place of the largest logit, 1000: LogSoftMax
    # rounds at that scale (see the precision gaps below).
    atol = 2.3e-13 if logits == "extreme" else 0.0
    np.testing.assert_allclose(output, formula(x), rtol=1e-14, atol=atol)
    np.testing.assert_allclose(input_grad, vjp(x, output_grad), rtol=1e-13, atol=1e-15)


# Known precision gaps: strict, so a fix makes them fail until the mark goes.


def test_softplus_keeps_its_relative_accuracy_in_the_negative_tail():
    """Once off by a relative error of 1 below x = -37 (log instead of log1p)."""
    x = np.array([[-40.0, -20.0, -7.0]])
    output = generated.SoftPlus().forward(x)
    np.testing.assert_allclose(output, np.logaddexp(0, x), rtol=1e-14)


def test_log_softmax_subtracts_the_shift_first():
    """Once rounded at the scale of the logits: (-shift - log(total)) + x."""
    x = np.array([[1000.0, 1000.0, -1000.0]])
    output = generated.LogSoftMax().forward(x)
    np.testing.assert_allclose(output[0, :2], np.log(0.5), rtol=1e-15)


# Criteria


@pytest.mark.parametrize("shape", [(4, 3), (1, 5), (6, 2)])
def test_mse_loss_and_gradient(shape):
    x, target = normal(shape), normal(shape, seed=1)
    criterion = generated.MSECriterion()
    loss = criterion.forward(x, target)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, np.sum((x - target) ** 2) / shape[0], rtol=1e-14)
    assert_loss_gradient_matches(criterion, x, target)


@pytest.mark.parametrize("target_kind", ["one_hot", "indices"])
@pytest.mark.parametrize("shape", [(4, 3), (1, 5), (6, 2)])
def test_class_nll_loss_and_gradient(shape, target_kind):
    x, indices = log_probabilities(shape), class_indices(shape, seed=1)
    target = one_hot(indices, shape[1]) if target_kind == "one_hot" else indices
    criterion = generated.ClassNLLCriterion()
    loss = criterion.forward(x, target)
    assert isinstance(loss, float)
    expected = -np.mean(x[np.arange(shape[0]), indices])
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    assert_loss_gradient_matches(criterion, x, target)


def test_class_nll_one_hot_and_indices_agree():
    shape = (5, 4)
    x, indices = log_probabilities(shape), class_indices(shape, seed=2)
    criterion = generated.ClassNLLCriterion()
    by_index = criterion.forward(x, indices), criterion.backward(x, indices)
    target = one_hot(indices, shape[1])
    by_one_hot = criterion.forward(x, target), criterion.backward(x, target)
    assert by_index[0] == by_one_hot[0]
    np.testing.assert_array_equal(by_index[1], by_one_hot[1])


# MaxPool2d and Flatten


def test_max_pool_gradient_goes_to_the_first_maximum_of_each_window():
    # Two 2x2 windows side by side: 3 ties at (0, 1) and (1, 0), 2 at three places.
    x = np.array([[[[1.0, 3.0, 0.0, 2.0], [3.0, 2.0, 2.0, 2.0]]]])
    layer = generated.MaxPool2d(2)
    np.testing.assert_array_equal(layer.forward(x), [[[[3.0, 2.0]]]])
    input_grad = layer.backward(x, np.array([[[[5.0, 7.0]]]]))
    np.testing.assert_array_equal(input_grad, [[[[0, 5, 0, 7], [0, 0, 0, 0]]]])


@pytest.mark.parametrize("kernel_size, stride", [(2, None), (2, 1), (5, 1), (5, None)])
def test_max_pool_sends_inf_and_nan_only_to_the_maximum(kernel_size, stride):
    """The scatter selects, it does not multiply by 0/1: inf * 0 would be NaN.
    Kernel 2 scatters by slices, kernel 5 (25 offsets) by np.add.at."""
    x = normal((1, 1, 10, 10))
    layer = generated.MaxPool2d(kernel_size, stride)
    y = layer.forward(x)
    output_grad = normal(y.shape, seed=1)
    output_grad[0, 0, 0, 0], output_grad[0, 0, -1, -1] = np.inf, np.nan
    input_grad = layer.backward(x, output_grad)
    finite = normal(y.shape, seed=1)
    finite[0, 0, 0, 0] = finite[0, 0, -1, -1] = 0.0
    expected = layer.backward(x, finite)
    special = ~np.isfinite(input_grad)
    assert special.sum() == 2
    np.testing.assert_array_equal(input_grad[~special], expected[~special])


def test_max_pool_backward_scatters_by_slices_for_small_windows():
    text = (Path(generated.__file__).parent / "max_pool2d.py").read_text()
    backward = text[text.index("def _backward_train") :]
    slices, add_at = backward.split("else:", 1)
    assert "if K**2 <= 16:" in slices and "+= value" in slices
    assert "np.add.at(" in add_at


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 2, 3, 2), (3, 5), (4, 1, 1, 1)])
def test_flatten_round_trip(shape):
    layer = generated.Flatten()
    x = normal(shape)
    output = layer.forward(x)
    np.testing.assert_array_equal(output, x.reshape(shape[0], -1))
    output_grad = normal(output.shape, seed=1)
    input_grad = layer.backward(x, output_grad)
    np.testing.assert_array_equal(input_grad, output_grad.reshape(shape))


# Bad input


def bad(name, call, message):
    return pytest.param(call, message, id=name)


BAD_INPUTS = [
    bad(
        "class_nll_index_too_large",
        lambda: generated.ClassNLLCriterion().forward(np.zeros((2, 3)), [0, 3]),
        r"^ClassNLLCriterion expects target class indices in \[0, 3\); got 3$",
    ),
    bad(
        "class_nll_negative_index",
        lambda: generated.ClassNLLCriterion().backward(np.zeros((2, 3)), [-1, 0]),
        r"^ClassNLLCriterion expects target class indices in \[0, 3\); got -1$",
    ),
    bad(
        "class_nll_indices_for_another_batch",
        lambda: generated.ClassNLLCriterion().forward(np.zeros((2, 3)), [0, 1, 2]),
        r"^ClassNLLCriterion expects target class indices of shape \(2,\)",
    ),
    bad(
        "mse_target_shape",
        lambda: generated.MSECriterion().forward(np.zeros((2, 3)), np.zeros((2, 4))),
        r"^MSECriterion expects target of shape \(2, 3\); got \(2, 4\)",
    ),
    bad(
        "max_pool_kernel_larger_than_input",
        lambda: generated.MaxPool2d(3).forward(np.zeros((1, 1, 2, 5))),
        r"^MaxPool2d expects .*got input of shape \(1, 1, 2, 5\)",
    ),
    bad(
        "max_pool_kernel_zero",
        lambda: generated.MaxPool2d(0),
        r"^MaxPool2d expects kernel_size .*got 0",
    ),
    bad(
        "max_pool_stride_zero",
        lambda: generated.MaxPool2d(2, stride=0),
        r"^MaxPool2d expects stride .*got 0",
    ),
    bad(
        "conv2d_stride_2_same",
        lambda: generated.Conv2d(2, 3, 3, stride=2, padding="same"),
        r"^Conv2d expects stride 1 with padding='same'.*got stride=2",
    ),
    bad(
        "conv2d_negative_padding",
        lambda: generated.Conv2d(2, 3, 3, padding=-1),
        r"^Conv2d expects padding .*got -1",
    ),
    bad(
        "conv2d_padding_valid",
        lambda: generated.Conv2d(2, 3, 3, padding="valid"),
        r"^Conv2d expects padding .*got 'valid'",
    ),
    bad(
        "conv2d_kernel_larger_than_input",
        lambda: generated.Conv2d(1, 1, 3, padding=0).forward(np.zeros((1, 1, 2, 2))),
        r"^Conv2d expects .*got input of shape \(1, 1, 2, 2\)",
    ),
    bad(
        "linear_features",
        lambda: generated.Linear(3, 2).forward(np.zeros((2, 4))),
        r"^Linear expects input of shape \(batch, 3\); got \(2, 4\)",
    ),
    bad(
        "layer_norm_features",
        lambda: generated.LayerNormalization(3).forward(np.zeros((2, 4))),
        r"^LayerNormalization expects input of shape \(batch, 3\); got \(2, 4\)",
    ),
    bad(
        "softmax_axes",
        lambda: generated.SoftMax().forward(np.zeros((2, 4, 1))),
        r"^SoftMax expects input of shape \(batch, N\); got \(2, 4, 1\)",
    ),
    bad(
        "flatten_output_grad",
        lambda: generated.Flatten().backward(np.zeros((3, 2, 2)), np.zeros((3, 5))),
        r"^Flatten expects output_grad of shape \(3, 4\); got \(3, 5\)",
    ),
]


@pytest.mark.parametrize(("call", "message"), BAD_INPUTS)
def test_catalog_layers_reject_bad_input_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_conv2d_without_bias_has_only_a_weight():
    layer = generated.Conv2d(2, 3, 3, bias=False, rng=0)
    assert layer.b is None and layer.gradb is None
    [weight], [grad] = layer.get_parameters(), layer.get_parameters_grad()
    assert weight is layer.W and grad is layer.gradW
    with pytest.raises(TypeError, match=r"^Conv2d expects bias as True or False"):
        generated.Conv2d(2, 3, 3, bias=1)
