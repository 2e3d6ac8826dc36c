"""Odd but valid input and numerical edges, for every layer.

NaN and inf propagate instead of raising; views with any strides give what
contiguous arrays give; float16, huge and tiny magnitudes stay finite and
accurate, or float16 is refused clearly. Then the numerics the batch
normalization and the dropout promise: a float32 batch with a large mean, a
batch of one, a constant feature, p = 0 and p = 1. Known faults are strict
xfail tests whose reason says what happens now.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import (
    assert_identity_bit_for_bit,
    assert_runs_agree,
    forward_backward,
    normal,
)
from tests.layer_cases import G, R, each_case, run_case

LOGITS = normal((4, 3))


# Odd but valid input


def with_entry(shape, value):
    """A normal array with ``value`` at index 1 of every axis, which every layer
    reads (index 0 of a strided, dilated convolution may fall between taps)."""
    x = normal(shape)
    x[tuple(min(1, size - 1) for size in shape)] = value
    return x


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@each_case()
def test_nan_propagates_without_an_error(case):
    x = with_entry(case.shape, np.nan)
    output, input_grad, _ = run_case(case, x)
    assert np.isnan(output).any()
    assert input_grad.shape == x.shape


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@each_case()
def test_inf_propagates_without_an_error(case):
    x = with_entry(case.shape, np.inf)
    output, input_grad, _ = run_case(case, x)
    assert not np.isfinite(output).all()
    assert input_grad.shape == x.shape


LAYOUTS = {
    "negative_strides": lambda a: np.flip(np.flip(a, -1).copy(), -1),
    "fortran_order": np.asfortranarray,
    "every_other_row": lambda a: np.repeat(a, 2, axis=0)[::2],
}


@each_case()
@pytest.mark.parametrize("layout", LAYOUTS)
def test_views_with_any_strides_give_what_contiguous_copies_give(case, layout):
    x = normal(case.shape)
    output_grad = normal(case.build().forward(x).shape, seed=1)
    view, grad_view = LAYOUTS[layout](x), LAYOUTS[layout](output_grad)
    # Summation order may follow the strides: equal to a few ulps, not bit for bit.
    assert_runs_agree(run_case(case, view, grad_view), run_case(case, x, output_grad))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@each_case()
def test_float16_is_computed_to_float16_accuracy_or_refused(case):
    """The README promises float32; float16 is accepted without a word, so it
    must either work to its own accuracy or be refused with a TypeError."""
    x = normal(case.shape).astype(np.float16)
    try:
        half = run_case(case, x)
    except TypeError as error:
        assert str(error).startswith(case.name) and "float16" in str(error)
        return
    assert half[0].dtype == half[1].dtype == np.float16
    output_grad = normal(half[0].shape, seed=1).astype(np.float16)
    assert_runs_agree(
        half, run_case(case, x.astype(np.float64), output_grad), 2e-2, 2e-2
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@each_case()
@pytest.mark.parametrize("scale", [1e150, 1e-150])
def test_huge_and_tiny_inputs_give_finite_results(case, scale):
    output, input_grad, grads = run_case(case, scale * normal(case.shape))
    for array in (output, input_grad, *grads):
        assert np.isfinite(array).all()


@each_case()
@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.float32, 100.0), (np.float64, 1000.0)], ids=["f32", "f64"]
)
def test_large_finite_inputs_raise_no_floating_point_error(case, dtype, scale):
    """Under np.errstate(all='raise'), a habit when hunting NaNs, nothing overflows."""
    x = (scale * normal(case.shape)).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        run_case(case, x)


@pytest.mark.parametrize("scale", [1e150, 1e-150])
@pytest.mark.parametrize(
    "build",
    [G.BatchNormalization, R.BatchNormalization, lambda: G.LayerNormalization(6)],
    ids=["generated-BatchNorm", "reference-BatchNorm", "generated-LayerNorm"],
)
def test_normalizations_hold_at_extreme_scales(build, scale):
    """Far above EPS the scale cancels; far below, EPS alone divides."""
    layer = build()
    x = normal((5, 6))
    axis = 1 if isinstance(layer, G.LayerNormalization) else 0
    centred = x - x.mean(axis=axis, keepdims=True)
    if scale > 1:
        want = centred / x.std(axis=axis, keepdims=True)
    else:
        want = scale * centred / np.sqrt(layer.EPS)
    np.testing.assert_allclose(layer.forward(scale * x), want, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("criterion", [G.MSECriterion, G.ClassNLLCriterion])
def test_criteria_propagate_nan(criterion):
    """A NaN the loss reads propagates (ClassNLL reads the target entries only,
    as PyTorch's does)."""
    x = LOGITS.copy()
    x[1, 1] = np.nan
    target = np.eye(3)[[0, 1, 2, 0]]
    assert np.isnan(criterion().forward(x, target))
    assert criterion().backward(x, target).shape == x.shape


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_class_nll_ignores_minus_infinity_outside_the_target_class():
    """A log-probability of -inf (a masked class) is valid input: PyTorch's
    NLLLoss reads the target entry only and gives a finite loss."""
    log_probabilities = np.array([[0.0, -np.inf], [np.log(0.25), np.log(0.75)]])
    loss = G.ClassNLLCriterion().forward(log_probabilities, [0, 1])
    assert loss == pytest.approx(-np.log(0.75) / 2)


# Numerics of the batch normalization and the dropout

PACKAGES = pytest.mark.parametrize("package", [G, R], ids=["generated", "reference"])


@PACKAGES
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_normalization_float32_large_mean_matches_float64(package, seed):
    """Features near 1e4 with unit spread, in float32, against the same in float64.

    The variance in one pass, E[x^2] - E[x]^2, loses every digit here (x^2 near
    1e8 has a float32 spacing of 8, more than the variance) and gives NaN or
    garbage; two passes keep it to 1e-5. What remains is the error of the float32
    mean: a few spacings of 1e4 (about 1e-3 each) in the output and the gradient,
    growing with the batch size.
    """
    x = (1e4 + normal((64, 5), seed)).astype(np.float32)
    output_grad = normal((64, 5), seed + 10)
    single_layer, double_layer = (
        package.BatchNormalization(),
        package.BatchNormalization(),
    )
    single = forward_backward(single_layer, x, output_grad.astype(np.float32))
    double = forward_backward(double_layer, x.astype(np.float64), output_grad)

    assert single[0].dtype == single[1].dtype == np.float32
    assert np.isfinite(single[0]).all() and np.isfinite(single[1]).all()
    tolerance = 8 * float(np.spacing(np.float32(1e4)))
    assert_runs_agree(single, double, rtol=0, atol=tolerance)
    np.testing.assert_allclose(
        single_layer.moving_variance, double_layer.moving_variance, rtol=1e-4
    )
    np.testing.assert_allclose(
        single_layer.moving_mean, double_layer.moving_mean, rtol=0, atol=tolerance
    )


@pytest.mark.parametrize("offset", [1e4, 1e5, 3e5])
def test_generated_batch_normalization_keeps_float32_digits_far_from_zero(offset):
    """A spread far below the mean's float32 spacing (0.03 at 1e5, where the
    spacing is 0.008) still gives float32 precision relative to the result.

    The shift by the first sample makes x - shift exact; only then may the
    mean of the shifted batch be taken off. Adding shift and mean first rounds
    them at the size of the data and loses the spread's digits.
    """
    rng = np.random.default_rng(int(offset))
    x = offset + 0.03 * rng.standard_normal((64, 7))
    output_grad = rng.standard_normal(x.shape)
    x32 = x.astype(np.float32)
    single = forward_backward(
        G.BatchNormalization(), x32, output_grad.astype(np.float32)
    )
    # The float64 oracle gets the float32 input's exact values.
    double = forward_backward(
        G.BatchNormalization(), x32.astype(np.float64), output_grad
    )
    for got, expected in zip(single[:2], double[:2], strict=True):
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error < 1e-5, error


@PACKAGES
def test_batch_normalization_of_a_batch_of_one(package):
    """A batch of one is its own mean: x - mean = 0, so in training the output is
    exactly 0 whatever the input, and so is the input gradient (moving the only
    sample moves the mean with it). Both stay finite, since EPS keeps
    sqrt(var + EPS) away from 0. Training on batches of one teaches the layers
    below nothing through this layer, and drives the moving variance toward 0.
    """
    layer = package.BatchNormalization(alpha=0.25)
    x = np.array([[1.5, -2.0, 3e5]])
    output, input_grad, _ = forward_backward(layer, x, np.array([[1.0, -2.0, 3.0]]))
    np.testing.assert_array_equal(output, np.zeros_like(x))
    np.testing.assert_array_equal(input_grad, np.zeros_like(x))
    np.testing.assert_allclose(layer.moving_mean, 0.75 * x[0])
    np.testing.assert_allclose(layer.moving_variance, [0.25, 0.25, 0.25])


def constant_feature(dtype, value, batch, partner, reason=None):
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    name = f"{np.dtype(dtype).name}-{value}-batch{batch}{'-partner' if partner else ''}"
    return pytest.param(dtype, value, batch, partner, id=name, marks=marks)


@PACKAGES
@pytest.mark.parametrize(
    ("dtype", "value", "batch", "partner"),
    [
        constant_feature(np.float32, 0.0, 64, True),
        constant_feature(np.float64, 0.5, 8, False),
        constant_feature(
            np.float64,
            0.1,
            3,
            False,
        ),
        constant_feature(
            np.float32,
            12345.678,
            64,
            True,
        ),
        constant_feature(
            np.float32,
            123456.79,
            64,
            True,
        ),
    ],
)
def test_a_constant_feature_normalizes_to_exactly_zero(
    package, dtype, value, batch, partner
):
    """A feature that does not vary over the batch carries no signal; its output
    must be exactly 0, not the rounding error of its mean divided by sqrt(EPS).
    ``partner`` adds a varying feature beside it, as in any real batch: the
    column sum is then strided. Subtracting the first sample before taking the
    mean (shifted data) would make every case exact.
    """
    x = np.full((batch, 2 if partner else 1), value, dtype=dtype)
    x[:, 1:] = normal((batch, x.shape[1] - 1), seed=3)
    output = package.BatchNormalization().forward(x)
    np.testing.assert_array_equal(output[:, 0], 0)


DROPOUT_DRAWS = {
    "shape": array_shapes(min_dims=1, max_dims=4, max_side=4),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "package": st.sampled_from([G, R]),
    "training": st.booleans(),
    "seed": st.integers(0, 2**16),
}


@settings(max_examples=40, deadline=None)
@given(**DROPOUT_DRAWS)
def test_dropout_p_zero_is_the_identity_bit_for_bit(
    shape, dtype, package, training, seed
):
    layer = package.Dropout(0.0, rng=seed)
    if not training:
        layer.evaluate()
    x, output_grad = normal(shape, seed, dtype), normal(shape, seed + 1, dtype)
    assert_identity_bit_for_bit(layer, x, output_grad)


@settings(max_examples=40, deadline=None)
@given(**DROPOUT_DRAWS)
def test_dropout_p_one_gives_exact_zeros_in_training(
    shape, dtype, package, training, seed
):
    layer = package.Dropout(1.0, rng=seed)
    x, output_grad = normal(shape, seed, dtype), normal(shape, seed + 1, dtype)
    if not training:
        layer.evaluate()
        assert_identity_bit_for_bit(layer, x, output_grad)
        return
    output, input_grad, _ = forward_backward(layer, x, output_grad)
    assert output.dtype == input_grad.dtype == dtype
    np.testing.assert_array_equal(output, np.zeros(shape))
    np.testing.assert_array_equal(input_grad, np.zeros(shape))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@PACKAGES
def test_dropout_p_one_turns_non_finite_entries_into_nan(package):
    """p = 1 multiplies by 0, as PyTorch does: 0 * inf and 0 * NaN are NaN, so a
    non-finite input is not hidden by the zeros around it."""
    x = np.array([[1.0, np.inf, -np.inf, np.nan]])
    output = package.Dropout(1.0, rng=0).forward(x)
    np.testing.assert_array_equal(output, [[0.0, np.nan, np.nan, np.nan]])
