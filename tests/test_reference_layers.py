"""Tests of the handwritten reference layers.

Every gradient is checked against central differences in float64 with a random
upstream gradient; the expected values of the other tests are computed by
formulas written independently of the layers.
"""

import warnings

import numpy as np
import pytest

from layers.random import draw_keep_mask, make_generator
from layers.reference import BatchNormalization, ChannelwiseScaling, Conv2d, Dropout
from tests.helpers import (
    ReplayGenerator,
    assert_gradients_match,
    assert_identity_bit_for_bit,
    normal,
)

# BatchNormalization


def trained_batch_normalization(features=3, alpha=0.5):
    """A layer whose moving statistics are far from their initial zeros / ones."""
    layer = BatchNormalization(alpha=alpha)
    for seed in range(3):
        layer.forward(2.0 + 3.0 * normal((6, features), seed=10 + seed))
    return layer


@pytest.mark.parametrize("training", [True, False])
def test_batch_normalization_gradient_matches_finite_differences(training):
    layer = trained_batch_normalization()
    if not training:
        layer.evaluate()
    assert_gradients_match(layer, 1.0 + 2.0 * normal((5, 3)))


def test_batch_normalization_training_output_uses_biased_batch_statistics():
    x = 1.5 + 4.0 * normal((7, 4))
    expected = (x - x.sum(axis=0) / 7) / np.sqrt(np.var(x, axis=0, ddof=0) + 1e-3)
    np.testing.assert_allclose(BatchNormalization().forward(x), expected, rtol=1e-12)


def test_batch_normalization_moving_statistics_follow_the_exponential_average():
    alpha = 0.3
    batches = [normal((5, 2), seed=seed) * (seed + 1) + seed for seed in range(3)]
    layer = BatchNormalization(alpha=alpha)
    assert layer.moving_mean is None and layer.moving_variance is None

    expected_mean, expected_variance = np.zeros(2), np.ones(2)
    for batch in batches:
        layer.forward(batch)
        mean = batch.sum(axis=0) / len(batch)
        biased_variance = ((batch - mean) ** 2).sum(axis=0) / len(batch)
        expected_mean = alpha * expected_mean + (1 - alpha) * mean
        expected_variance = alpha * expected_variance + (1 - alpha) * biased_variance
        np.testing.assert_allclose(layer.moving_mean, expected_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.moving_variance, expected_variance, rtol=1e-12)


def test_batch_normalization_evaluation_uses_moving_statistics():
    layer = trained_batch_normalization()
    mean, variance = layer.moving_mean.copy(), layer.moving_variance.copy()
    layer.evaluate()
    x = normal((4, 3), seed=5)
    expected = (x - mean) / np.sqrt(variance + BatchNormalization.EPS)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.moving_mean, mean)
    np.testing.assert_array_equal(layer.moving_variance, variance)


def test_batch_normalization_evaluation_input_grad_uses_moving_variance():
    # The input gradient in evaluation mode must come from the statistics the
    # forward used, the moving ones, not from the current batch's.
    layer = trained_batch_normalization()
    layer.evaluate()
    x, output_grad = normal((4, 3), seed=6), normal((4, 3), seed=7)
    layer.forward(x)
    expected = output_grad / np.sqrt(layer.moving_variance + BatchNormalization.EPS)
    np.testing.assert_allclose(layer.backward(x, output_grad), expected, rtol=1e-12)


def test_batch_normalization_training_gradient_of_the_sum_is_zero():
    x = normal((6, 3))
    input_grad = BatchNormalization().backward(x, np.ones((6, 3)))
    np.testing.assert_allclose(input_grad, 0.0, atol=1e-12)


def test_batch_normalization_keeps_float32():
    layer = BatchNormalization(alpha=0.5)
    x = normal((5, 3), dtype=np.float32)
    assert layer.forward(x).dtype == np.float32
    assert layer.moving_mean.dtype == np.float32
    assert layer.moving_variance.dtype == np.float32
    assert layer.backward(x, normal((5, 3), dtype=np.float32)).dtype == np.float32
    layer.evaluate()
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(x, normal((5, 3), dtype=np.float32)).dtype == np.float32


def test_batch_normalization_rejects_bad_input():
    layer = BatchNormalization()
    with pytest.raises(ValueError, match=r"BatchNormalization expects input"):
        layer.forward(normal((2, 3, 4)))
    with pytest.raises(TypeError, match=r"BatchNormalization expects input"):
        layer.forward(np.ones((2, 3), dtype=int))
    layer.forward(normal((4, 3)))
    with pytest.raises(ValueError, match=r"n = 3"):
        layer.forward(normal((4, 5)))
    with pytest.raises(ValueError, match=r"BatchNormalization expects output_grad"):
        layer.backward(normal((4, 3)), normal((4, 2)))
    with pytest.raises(ValueError, match=r"alpha"):
        BatchNormalization(alpha=1.5)


def test_batch_normalization_repr():
    assert repr(BatchNormalization(alpha=0.9)) == (
        "BatchNormalization(alpha=0.9, mode=train)"
    )


# ChannelwiseScaling


@pytest.mark.parametrize("training", [True, False])
def test_channelwise_scaling_gradients_match_finite_differences(training):
    layer = ChannelwiseScaling(4, rng=0)
    if not training:
        layer.evaluate()
    assert_gradients_match(layer, normal((5, 4)))


def test_channelwise_scaling_formulas():
    layer = ChannelwiseScaling(3, rng=0)
    x, output_grad = normal((4, 3), seed=1), normal((4, 3), seed=2)
    np.testing.assert_allclose(layer.forward(x), x * layer.gamma + layer.beta)
    np.testing.assert_allclose(
        layer.backward(x, output_grad), output_grad * layer.gamma
    )
    np.testing.assert_allclose(layer.gradGamma, np.einsum("bn,bn->n", output_grad, x))
    np.testing.assert_allclose(layer.gradBeta, np.einsum("bn->n", output_grad))


def test_channelwise_scaling_parameter_grads_accumulate_and_reset():
    layer = ChannelwiseScaling(3, rng=0)
    x, output_grad = normal((4, 3), seed=1), normal((4, 3), seed=2)
    layer.backward(x, output_grad)
    once = [grad.copy() for grad in layer.get_parameters_grad()]
    layer.backward(x, output_grad)
    for grad, first in zip(layer.get_parameters_grad(), once, strict=True):
        np.testing.assert_allclose(grad, 2 * first)
    layer.zero_grad()
    assert all(not grad.any() for grad in layer.get_parameters_grad())


def test_channelwise_scaling_initialisation():
    layer = ChannelwiseScaling(16, rng=3)
    assert layer.gamma.shape == layer.beta.shape == (16,)
    assert np.all(np.abs(layer.gamma) <= 0.25) and np.all(np.abs(layer.beta) <= 0.25)
    assert layer.get_parameters() == [layer.gamma, layer.beta]
    assert layer.get_parameters_grad()[0] is layer.gradGamma
    assert not layer.gradGamma.any() and not layer.gradBeta.any()
    np.testing.assert_array_equal(ChannelwiseScaling(16, rng=3).gamma, layer.gamma)


def test_channelwise_scaling_keeps_float32_and_rejects_bad_input():
    layer = ChannelwiseScaling(3, rng=0)
    x = normal((2, 3), dtype=np.float32)
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(x, x).dtype == np.float32
    with pytest.raises(ValueError, match=r"ChannelwiseScaling expects input of shape"):
        layer.forward(normal((2, 4)))
    with pytest.raises(ValueError, match=r"n_out"):
        ChannelwiseScaling(0)
    assert repr(layer) == "ChannelwiseScaling(n_out=3, mode=train)"


# Dropout


def test_make_generator_accepts_none_seed_and_generator():
    generator = np.random.default_rng(0)
    assert make_generator(generator) is generator
    assert isinstance(make_generator(None), np.random.Generator)
    np.testing.assert_array_equal(
        make_generator(7).random(3), np.random.default_rng(7).random(3)
    )
    for bad in ["7", 1.5, True, np.random.RandomState(0)]:
        with pytest.raises(TypeError, match=r"rng"):
            make_generator(bad)
    with pytest.raises(ValueError, match=r"rng"):
        make_generator(-1)


def test_draw_keep_mask_drops_with_probability_p():
    mask = draw_keep_mask(np.random.default_rng(0), (200_000,), 0.3, np.float32)
    assert mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    # Standard deviation of the mean is sqrt(0.21 / 200000) ~ 0.001.
    assert abs(mask.mean() - 0.7) < 0.005


@pytest.mark.parametrize("training", [True, False])
def test_dropout_gradient_matches_finite_differences(training):
    layer = Dropout(0.4)
    layer.generator = ReplayGenerator(seed=3)
    if not training:
        layer.evaluate()
    assert_gradients_match(layer, normal((3, 4, 2)))


def test_dropout_training_forward_and_backward_formulas():
    p = 0.25
    layer = Dropout(p, rng=5)
    x, output_grad = normal((6, 5), seed=1), normal((6, 5), seed=2)
    output = layer.forward(x)
    mask = (np.random.default_rng(5).random((6, 5)) >= p).astype(np.float64)
    np.testing.assert_array_equal(layer.mask, mask)
    np.testing.assert_allclose(output, x * mask / (1 - p), rtol=1e-15)
    input_grad = layer.backward(x, output_grad)
    np.testing.assert_allclose(input_grad, output_grad * mask / (1 - p), rtol=1e-15)


def test_dropout_backward_reuses_the_mask():
    layer = Dropout(0.5, rng=0)
    x, output_grad = normal((8, 8), seed=1), normal((8, 8), seed=2)
    layer.forward(x)
    mask = layer.mask.copy()
    state = layer.generator.bit_generator.state
    first = layer.backward(x, output_grad)
    second = layer.backward(x, output_grad)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(layer.mask, mask)
    assert layer.generator.bit_generator.state == state


def test_dropout_same_seed_same_masks():
    x = normal((4, 6))
    first, second, other = (
        Dropout(0.5, rng=11),
        Dropout(0.5, rng=11),
        Dropout(0.5, rng=12),
    )
    for _ in range(2):
        np.testing.assert_array_equal(first.forward(x), second.forward(x))
        np.testing.assert_array_equal(first.mask, second.mask)
    other.forward(x)
    assert not np.array_equal(first.mask, other.mask)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keep_rate(p):
    layer = Dropout(p, rng=0)
    layer.forward(np.ones((400, 500)))
    assert abs(layer.mask.mean() - (1 - p)) < 0.005


def test_dropout_p_one_gives_zeros_without_warning():
    layer = Dropout(1.0, rng=0)
    x = normal((3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = layer.forward(x)
        input_grad = layer.backward(x, normal((3, 4), seed=1))
    np.testing.assert_array_equal(output, np.zeros_like(x))
    np.testing.assert_array_equal(input_grad, np.zeros_like(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_p_zero_is_the_identity_bit_for_bit(dtype):
    layer = Dropout(0.0, rng=0)
    x, output_grad = normal((5, 7), dtype=dtype), normal((5, 7), seed=1, dtype=dtype)
    assert_identity_bit_for_bit(layer, x, output_grad)


def test_dropout_evaluation_is_the_identity():
    layer = Dropout(0.7, rng=0)
    layer.evaluate()
    x, output_grad = normal((2, 3, 4)), normal((2, 3, 4), seed=1)
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(layer.backward(x, output_grad), output_grad)
    assert layer.mask is None


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_dropout_rejects_p_outside_the_unit_interval(p):
    with pytest.raises(ValueError, match=r"Dropout expects p"):
        Dropout(p)


def test_dropout_backward_before_forward_fails_clearly():
    with pytest.raises(ValueError, match=r"Dropout.*forward"):
        Dropout(0.5).backward(normal((2, 3)), normal((2, 3)))


def test_dropout_accepts_any_shape_and_keeps_float32():
    layer = Dropout(0.5, rng=0)
    for shape in [(7,), (2, 3), (2, 3, 4, 5)]:
        x = normal(shape, dtype=np.float32)
        assert layer.forward(x).dtype == np.float32
        assert layer.backward(x, x).dtype == np.float32
    with pytest.raises(ValueError, match=r"Dropout expects input"):
        layer.forward(np.float64(1.0))
    with pytest.raises(ValueError, match=r"Dropout expects input"):
        layer.forward(np.ones((2, 0)))
    with pytest.raises(ValueError, match=r"Dropout expects output_grad"):
        layer.backward(np.ones((2, 3, 4, 5)), np.ones((2, 3)))
    assert repr(layer) == "Dropout(p=0.5, mode=train)"


# Conv2d


def naive_conv2d(x, weight, bias):
    """Cross-correlation with zero 'same' padding, one multiply-add at a time."""
    batch, in_channels, height, width = x.shape
    out_channels, _, size, _ = weight.shape
    padding = size // 2
    output = np.zeros((batch, out_channels, height, width))
    for b in range(batch):
        for o in range(out_channels):
            for h in range(height):
                for w in range(width):
                    total = bias[o]
                    for i in range(in_channels):
                        for kh in range(size):
                            for kw in range(size):
                                row, column = h + kh - padding, w + kw - padding
                                if 0 <= row < height and 0 <= column < width:
                                    total += x[b, i, row, column] * weight[o, i, kh, kw]
                    output[b, o, h, w] = total
    return output


def naive_conv2d_weight_grad(x, output_grad, size):
    batch, in_channels, height, width = x.shape
    out_channels = output_grad.shape[1]
    padding = size // 2
    grad = np.zeros((out_channels, in_channels, size, size))
    for o, i, kh, kw in np.ndindex(grad.shape):
        for b, h, w in np.ndindex(batch, height, width):
            row, column = h + kh - padding, w + kw - padding
            if 0 <= row < height and 0 <= column < width:
                grad[o, i, kh, kw] += output_grad[b, o, h, w] * x[b, i, row, column]
    return grad


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_conv2d_forward_matches_naive_loops(kernel_size):
    layer = Conv2d(2, 3, kernel_size, rng=0)
    x = normal((2, 2, 4, 5))
    np.testing.assert_allclose(
        layer.forward(x), naive_conv2d(x, layer.W, layer.b), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv2d_gradients_match_finite_differences(kernel_size, training):
    layer = Conv2d(2, 2, kernel_size, rng=0)
    if not training:
        layer.evaluate()
    assert_gradients_match(layer, normal((2, 2, 4, 3)))


def test_conv2d_parameter_grads_after_backward():
    layer = Conv2d(2, 3, 3, rng=0)
    x, output_grad = normal((2, 2, 4, 5), seed=1), normal((2, 3, 4, 5), seed=2)
    layer.forward(x)
    layer.backward(x, output_grad)
    grad_w, grad_b = layer.get_parameters_grad()
    assert grad_w is layer.gradW and grad_b is layer.gradb
    assert np.all(grad_w != 0) and np.all(grad_b != 0)
    np.testing.assert_allclose(
        grad_w, naive_conv2d_weight_grad(x, output_grad, 3), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(grad_b, output_grad.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_conv2d_parameter_grads_accumulate_and_reset():
    layer = Conv2d(1, 2, 3, rng=0)
    x, output_grad = normal((2, 1, 3, 3), seed=1), normal((2, 2, 3, 3), seed=2)
    layer.backward(x, output_grad)
    once = [grad.copy() for grad in layer.get_parameters_grad()]
    layer.backward(x, output_grad)
    for grad, first in zip(layer.get_parameters_grad(), once, strict=True):
        np.testing.assert_allclose(grad, 2 * first, rtol=1e-12)
    layer.zero_grad()
    assert all(not grad.any() for grad in layer.get_parameters_grad())


@pytest.mark.parametrize("position", [(1, 1, 2, 3), (0, 0, 0, 0), (1, 2, 4, 5)])
def test_conv2d_one_hot_output_grad_gives_the_kernel_back(position):
    # Output pixel (h0, w0) read input pixel (h0 + kh - P, w0 + kw - P) with
    # weight W[o0, i, kh, kw]; that weight is its gradient, clipped at borders.
    b0, o0, h0, w0 = position
    size, padding = 5, 2
    layer = Conv2d(2, 3, size, rng=0)
    x = normal((2, 2, 5, 6))
    output_grad = np.zeros((2, 3, 5, 6))
    output_grad[position] = 1.0

    expected = np.zeros_like(x)
    for i, kh, kw in np.ndindex(2, size, size):
        row, column = h0 + kh - padding, w0 + kw - padding
        if 0 <= row < 5 and 0 <= column < 6:
            expected[b0, i, row, column] = layer.W[o0, i, kh, kw]
    np.testing.assert_allclose(layer.backward(x, output_grad), expected, atol=1e-12)


def test_conv2d_keeps_float32():
    layer = Conv2d(2, 3, 3, rng=0)
    x = normal((1, 2, 4, 4), dtype=np.float32)
    assert layer.forward(x).dtype == np.float32
    output_grad = normal((1, 3, 4, 4), dtype=np.float32)
    assert layer.backward(x, output_grad).dtype == np.float32


def test_conv2d_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"odd kernel_size"):
        Conv2d(1, 1, 2)
    for argument, sizes in [
        ("in_channels", (0, 1, 3)),
        ("out_channels", (1, -2, 3)),
        ("kernel_size", (1, 1, 3.0)),
    ]:
        with pytest.raises(ValueError, match=argument):
            Conv2d(*sizes)
    layer = Conv2d(3, 8, 3, rng=0)
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\); got \(8, 4, 6, 6\)"):
        layer.forward(np.zeros((8, 4, 6, 6)))
    with pytest.raises(ValueError, match=r"Conv2d expects output_grad"):
        layer.backward(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))
    assert repr(layer) == (
        "Conv2d(in_channels=3, out_channels=8, kernel_size=3, mode=train)"
    )
