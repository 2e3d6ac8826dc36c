"""Tests of the generated layers against the reference layers, central differences
and formulas written out here.

Every comparison of gradients uses a random ``output_grad``: with an all-ones one
the training-mode input gradient of a batch normalization is zero (the gradient of
``sum(batchnorm(x))``) and a wrong formula could pass. Sizes are small so that the
finite differences stay fast.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from layers import generated, reference
from tests.helpers import (
    ReplayGenerator,
    assert_gradients_match,
    assert_identity_bit_for_bit,
    normal,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
MODES = pytest.mark.parametrize("training", [True, False], ids=["train", "evaluate"])


@dataclass(frozen=True)
class Case:
    """One layer configuration, built the same way from either package.

    Attributes:
        name: the test id.
        build: makes the layer from a package, ``generated`` or ``reference``.
        input_shape: the shape of the inputs the layer is fed.
        parameters: the attributes ``get_parameters()`` returns, in order.
        grads: the attributes ``get_parameters_grad()`` returns, in order.
        state: attributes a forward pass sets, which both packages must agree on.
    """

    name: str
    build: Callable
    input_shape: tuple
    parameters: tuple = ()
    grads: tuple = ()
    state: tuple = ()


def conv2d_case(kernel_size, image):
    height, width = image
    return Case(
        f"conv2d_k{kernel_size}_{height}x{width}",
        lambda layers: layers.Conv2d(2, 3, kernel_size, rng=0),
        (2, 2, height, width),
        parameters=("W", "b"),
        grads=("gradW", "gradb"),
    )


BATCH_NORMALIZATION = Case(
    "batch_normalization",
    lambda layers: layers.BatchNormalization(alpha=0.3),
    (6, 3),
    state=("moving_mean", "moving_variance"),
)
CASES = [
    BATCH_NORMALIZATION,
    Case(
        "channelwise_scaling",
        lambda layers: layers.ChannelwiseScaling(4, rng=0),
        (5, 4),
        parameters=("gamma", "beta"),
        grads=("gradGamma", "gradBeta"),
    ),
    Case(
        "dropout",
        lambda layers: layers.Dropout(0.4, rng=3),
        (4, 3, 2),
        state=("mask",),
    ),
    conv2d_case(1, (5, 7)),
    conv2d_case(3, (5, 7)),
    conv2d_case(5, (5, 7)),
    # A kernel wider and taller than the image: most of it reads padding.
    conv2d_case(5, (2, 3)),
]
EACH_CASE = pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
EACH_CASE_WITH_PARAMETERS = pytest.mark.parametrize(
    "case", [case for case in CASES if case.parameters], ids=lambda case: case.name
)


def prepared(case, layers, training, dtype=np.float64):
    """Builds the layer, runs two training forwards and sets the mode.

    The forwards move the moving statistics away from their initial zeros and
    ones, and the dropout generator away from its seed, the same way in both
    packages.
    """
    layer = case.build(layers)
    for seed in (10, 11):
        layer.forward(2.0 + 3.0 * normal(case.input_shape, seed, dtype))
    if not training:
        layer.evaluate()
    return layer


# Every layer: generated == reference == central differences


@MODES
@EACH_CASE
def test_generated_matches_reference(case, training):
    ours = prepared(case, generated, training)
    theirs = prepared(case, reference, training)
    for mine, yours in zip(ours.get_parameters(), theirs.get_parameters(), strict=True):
        np.testing.assert_array_equal(mine, yours)

    x = 1.0 + 2.0 * normal(case.input_shape, seed=1)
    output = ours.forward(x)
    np.testing.assert_allclose(output, theirs.forward(x), **TIGHT)
    for name in case.state:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), **TIGHT)

    output_grad = normal(output.shape, seed=2)
    np.testing.assert_allclose(
        ours.backward(x, output_grad), theirs.backward(x, output_grad), **TIGHT
    )
    pairs = zip(ours.get_parameters_grad(), theirs.get_parameters_grad(), strict=True)
    for mine, yours in pairs:
        assert mine.any()
        np.testing.assert_allclose(mine, yours, **TIGHT)


@MODES
@EACH_CASE
def test_generated_gradients_match_finite_differences(case, training):
    layer = prepared(case, generated, training)
    if isinstance(layer, generated.Dropout):
        layer.generator = ReplayGenerator(seed=3)
    report = assert_gradients_match(layer, 1.0 + 2.0 * normal(case.input_shape))
    # The checker names a parameter's gradient after the attribute holding it.
    names = [comparison.name for comparison in report.comparisons]
    assert names == ["input_grad", *(f"grad_{name}" for name in case.parameters)]


@MODES
@EACH_CASE_WITH_PARAMETERS
def test_generated_parameter_grads_accumulate_and_reset(case, training):
    layer = prepared(case, generated, training)
    parameters, grads = layer.get_parameters(), layer.get_parameters_grad()
    attributes = zip(case.parameters, case.grads, strict=True)
    assert len(parameters) == len(grads) == len(case.parameters)
    for parameter, grad, (parameter_name, grad_name) in zip(
        parameters, grads, attributes, strict=True
    ):
        assert parameter is getattr(layer, parameter_name)
        assert grad is getattr(layer, grad_name)
        assert grad.shape == parameter.shape and grad.dtype == parameter.dtype

    x = normal(case.input_shape, seed=1)
    output_grad = normal(layer.forward(x).shape, seed=2)
    layer.backward(x, output_grad)
    once = [grad.copy() for grad in grads]
    layer.backward(x, output_grad)
    for grad, first in zip(grads, once, strict=True):
        np.testing.assert_allclose(grad, 2 * first, rtol=1e-12)

    # zero_grad clears the very arrays get_parameters_grad() handed out.
    layer.zero_grad()
    assert all(not grad.any() for grad in grads)
    layer.backward(x, output_grad)
    for grad, first in zip(layer.get_parameters_grad(), once, strict=True):
        np.testing.assert_allclose(grad, first, rtol=1e-12)


@MODES
@EACH_CASE
def test_generated_keeps_float32(case, training):
    ours = prepared(case, generated, training, dtype=np.float32)
    theirs = prepared(case, reference, training, dtype=np.float32)
    x = normal(case.input_shape, seed=1, dtype=np.float32)
    output = ours.forward(x)
    output_grad = normal(output.shape, seed=2, dtype=np.float32)
    input_grad = ours.backward(x, output_grad)

    assert output.dtype == input_grad.dtype == np.float32
    assert all(getattr(ours, name).dtype == np.float32 for name in case.state)
    loose = {"rtol": 1e-4, "atol": 1e-5}
    np.testing.assert_allclose(output, theirs.forward(x), **loose)
    np.testing.assert_allclose(input_grad, theirs.backward(x, output_grad), **loose)


# BatchNormalization


def test_generated_batch_normalization_evaluation_input_grad():
    # In evaluation mode each output depends on its own input only, through the
    # moving statistics: the Jacobian is diagonal.
    layer = prepared(BATCH_NORMALIZATION, generated, training=False)
    x, output_grad = normal((4, 3), seed=1), normal((4, 3), seed=2)
    layer.forward(x)
    assert layer.EPS == reference.BatchNormalization.EPS == 1e-3
    expected = output_grad / np.sqrt(layer.moving_variance + layer.EPS)
    np.testing.assert_allclose(layer.backward(x, output_grad), expected, rtol=1e-14)


# Dropout


def test_generated_dropout_same_seed_gives_the_reference_masks():
    ours, theirs = generated.Dropout(0.4, rng=11), reference.Dropout(0.4, rng=11)
    for seed in range(3):
        x = normal((4, 3, 2), seed)
        # The masks hold 0 and 1, so the products are exact in either order.
        np.testing.assert_array_equal(ours.forward(x), theirs.forward(x))
        np.testing.assert_array_equal(ours.mask, theirs.mask)


@pytest.mark.parametrize("forward_first", [True, False], ids=["forward", "no_forward"])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_generated_dropout_backward_uses_an_assigned_mask(p, forward_first):
    shape = (4, 3, 2)
    mask = (normal(shape, seed=5) > 0).astype(np.float64)
    x, output_grad = normal(shape, seed=1), normal(shape, seed=2)

    input_grads = []
    for layers in (generated, reference):
        layer = layers.Dropout(p, rng=0)
        if forward_first:
            layer.forward(x)
        layer.mask = mask.copy()
        input_grads.append(layer.backward(x, output_grad))
    np.testing.assert_array_equal(*input_grads)
    np.testing.assert_allclose(input_grads[0], output_grad * mask / (1 - p))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_generated_dropout_p_one_zeroes_forward_and_backward(dtype):
    layer = generated.Dropout(1.0, rng=0)
    x = normal((4, 3, 2), dtype=dtype)
    output = layer.forward(x)
    input_grad = layer.backward(x, normal((4, 3, 2), seed=1, dtype=dtype))
    for array in (output, input_grad):
        assert array.dtype == dtype
        assert not array.any()


@MODES
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_generated_dropout_p_zero_is_the_identity_bit_for_bit(dtype, training):
    layer = generated.Dropout(0.0, rng=0)
    if not training:
        layer.evaluate()
    x = normal((4, 3, 2), dtype=dtype)
    output_grad = normal((4, 3, 2), seed=1, dtype=dtype)
    assert_identity_bit_for_bit(layer, x, output_grad)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None])
def test_generated_dropout_rejects_p_outside_the_unit_interval(p):
    with pytest.raises(ValueError, match=r"Dropout expects p as a real number"):
        generated.Dropout(p)


def test_generated_dropout_backward_reuses_the_mask():
    layer = generated.Dropout(0.5, rng=0)
    x, output_grad = normal((4, 3, 2), seed=1), normal((4, 3, 2), seed=2)
    layer.forward(x)
    mask = layer.mask.copy()
    state = layer.generator.bit_generator.state

    input_grads = [layer.backward(x, output_grad) for _ in range(2)]
    np.testing.assert_array_equal(*input_grads)
    np.testing.assert_allclose(input_grads[0], output_grad * mask * 2, rtol=1e-15)
    np.testing.assert_array_equal(layer.mask, mask)
    assert layer.generator.bit_generator.state == state


@pytest.mark.parametrize("shape", [(4, 3, 2), (2, 3, 2, 2)])
def test_generated_dropout_keeps_the_shape_of_many_axes(shape):
    layer = generated.Dropout(0.5, rng=0)
    x = normal(shape)
    output = layer.forward(x)
    assert output.shape == layer.mask.shape == shape
    np.testing.assert_array_equal(output, x * layer.mask * 2)
    assert layer.backward(x, normal(shape, seed=1)).shape == shape


# Conv2d


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize(
    "position",
    [(1, 2, 2, 3), (0, 0, 0, 0), (1, 1, 4, 6), (0, 1, 1, 6)],
    ids=["inside", "top_left", "bottom_right", "right_edge"],
)
def test_generated_conv2d_one_hot_output_grad_gives_the_kernel(position, kernel_size):
    # Output pixel (h0, w0) reads input pixel (h0 - P + kh, w0 - P + kw) through
    # W[o0, :, kh, kw], so that weight is the pixel's gradient. The backward
    # formula slides the flipped kernel over output_grad; on a one-hot output_grad
    # the two reflections cancel and W[o0] lands unflipped, centred on (h0, w0).
    b0, o0, h0, w0 = position
    size, padding = kernel_size, kernel_size // 2
    layer = generated.Conv2d(2, 3, size, rng=0)
    x = normal((2, 2, 5, 7))
    output_grad = np.zeros((2, 3, 5, 7))
    output_grad[position] = 1.0

    # On a canvas padded by P the whole kernel fits; cropping clips it at borders.
    canvas = np.zeros((2, 2, 5 + 2 * padding, 7 + 2 * padding))
    canvas[b0, :, h0 : h0 + size, w0 : w0 + size] = layer.W[o0]
    expected = canvas[:, :, padding : padding + 5, padding : padding + 7]

    input_grad = layer.backward(x, output_grad)
    np.testing.assert_allclose(input_grad, expected, rtol=0, atol=1e-15)
    # The kernel is not symmetric, so a flip in the wrong place would be caught.
    assert not np.allclose(layer.W[o0], layer.W[o0, :, ::-1, ::-1])


@pytest.mark.parametrize("kernel_size", [2, 4])
def test_generated_conv2d_takes_an_even_kernel_with_same_padding(kernel_size):
    """Unlike the course's layer, the generated one pads an even kernel as
    PyTorch does: the output keeps the input's size."""
    layer = generated.Conv2d(2, 3, kernel_size, rng=0)
    assert layer.forward(normal((2, 2, 5, 6))).shape == (2, 3, 5, 6)
    with pytest.raises(ValueError, match=r"Conv2d expects an odd kernel_size"):
        reference.Conv2d(2, 3, kernel_size)


# Bad input


def after_one_forward(layer, shape):
    layer.forward(normal(shape))
    return layer


def forward(shape, dtype=np.float64):
    return lambda layer: layer.forward(np.ones(shape, dtype=dtype))


def backward(input_shape, output_grad_shape, dtype=np.float64):
    def call(layer):
        return layer.backward(
            np.ones(input_shape), np.ones(output_grad_shape, dtype=dtype)
        )

    return call


LAYERS_SEEN_ONE_FORWARD = {
    "BatchNormalization": lambda: after_one_forward(
        generated.BatchNormalization(), (4, 3)
    ),
    "ChannelwiseScaling": lambda: after_one_forward(
        generated.ChannelwiseScaling(3, rng=0), (4, 3)
    ),
    "Dropout": lambda: after_one_forward(generated.Dropout(0.5, rng=0), (4, 3, 2)),
    "Conv2d": lambda: after_one_forward(generated.Conv2d(2, 3, 3, rng=0), (1, 2, 5, 7)),
}

BAD_INPUTS = [
    ("BatchNormalization", forward((4, 3, 1)), ValueError, r"input .*got \(4, 3, 1\)"),
    ("BatchNormalization", forward((4, 5)), ValueError, r"got input .*\(4, 5\)"),
    ("BatchNormalization", backward((4, 3), (4, 2)), ValueError, r"output_grad"),
    ("BatchNormalization", forward((4, 3), int), TypeError, r"input .*int64"),
    ("ChannelwiseScaling", forward((3,)), ValueError, r"input .*got \(3,\)"),
    ("ChannelwiseScaling", forward((4, 2)), ValueError, r"input .*got \(4, 2\)"),
    ("ChannelwiseScaling", backward((4, 3), (3, 3)), ValueError, r"output_grad"),
    ("ChannelwiseScaling", backward((4, 3), (4, 3), int), TypeError, r"output_grad"),
    ("Dropout", forward(()), ValueError, r"input .*got \(\)"),
    ("Dropout", backward((4, 3, 2), (4, 6)), ValueError, r"output_grad"),
    ("Dropout", forward((4, 3, 2), np.int32), TypeError, r"input .*int32"),
    ("Conv2d", forward((2, 5, 7)), ValueError, r"input .*got \(2, 5, 7\)"),
    ("Conv2d", forward((1, 3, 5, 7)), ValueError, r"\(batch, 2, H, W\); got"),
    ("Conv2d", backward((1, 2, 5, 7), (1, 2, 5, 7)), ValueError, r"output_grad"),
    ("Conv2d", backward((1, 2, 5, 7), (1, 3, 5, 6)), ValueError, r"output_grad"),
    ("Conv2d", forward((1, 2, 5, 7), np.int16), TypeError, r"input .*int16"),
]


@pytest.mark.parametrize(
    ("layer_name", "call", "error", "detail"),
    BAD_INPUTS,
    ids=[f"{row[0]}-{index}" for index, row in enumerate(BAD_INPUTS)],
)
def test_generated_layers_reject_bad_input_naming_the_layer(
    layer_name, call, error, detail
):
    layer = LAYERS_SEEN_ONE_FORWARD[layer_name]()
    with pytest.raises(error, match=rf"^{layer_name}\b.*{detail}"):
        call(layer)


@pytest.mark.parametrize("kind", [generated, reference], ids=["generated", "reference"])
def test_dropout_misuse_is_refused_alike(kind):
    layer = kind.Dropout(0.5, rng=0)
    assert layer.forward(np.ones(7)).shape == (7,)
    with pytest.raises(ValueError, match="forward"):
        kind.Dropout(0.5).backward(np.ones((2, 3)), np.ones((2, 3)))
    layer.forward(np.ones((4, 6)))
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        layer.backward(np.ones((6, 4)), np.ones((6, 4)))
