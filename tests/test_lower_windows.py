"""Correlations lowered to one matrix product per kernel offset.

A small 1-D convolution model, with literal padding and dilation, exercises
both forms of ``codegen.lower_windows``: its forward pass and input gradient
(positions kept, offsets summed, the input gradient reading the flipped kernel)
and its weight gradient (positions summed, offsets kept). Each configuration is
checked against a direct NumPy loop and against central differences, and the
generated code must really take the matrix-product path.
"""

import itertools
import re
import tracemalloc
import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from codegen.emit_module import emit_module
from codegen.load import layer_class
from derivations import Model
from derivations.models import build
from layers.gradcheck import check_gradients
from tests.helpers import normal

# (kernel_size, padding, dilation): windows that run past both ends, or neither.
CONFIGS = [
    (k, p, d)
    for k, p, d in itertools.product((1, 2, 3), (0, 1, 3), (1, 2))
    if 7 + 2 * p - d * (k - 1) >= 1
]


def correlation_model(padding, dilation) -> Model:
    """``y[b, o, i] = sum_{c, k} w[o, c, k] * x[b, c, i + dilation*k - padding]``."""
    model = Model("Correlation1d", "A 1-D correlation.", source="tests")
    B = model.size("B", example=4)
    C = model.size("C", example=3, bound_to="in_channels")
    O = model.size("O", example=5, bound_to="out_channels")  # noqa: E741
    N = model.size("N", example=16)
    K = model.size("K", example=3, bound_to="kernel_size")
    No = model.size(
        "No",
        needs="an input at least as long as the dilated kernel",
        example=16,
        bound_to=f"N + {2 * padding} - {dilation} * (K - 1)",
    )
    for name in ("in_channels", "out_channels", "kernel_size"):
        model.argument(name)
    b, c, o = model.index("b", B), model.index("c", C), model.index("o", O)
    n, i, k = model.index("n", N), model.index("i", No), model.index("k", K)
    x = model.input("x", (b, c, n), layout=("batch", "in_channels", "N"))
    w = model.parameter("w", (o, c, k), "w", "grad_w")
    read = x[b, c, i + dilation * k - padding]
    with model.mode("train"):
        model.define(
            "y", (b, o, i), sp.Sum(w[o, c, k] * read, (c, 0, C - 1), (k, 0, K - 1))
        )
    return model


def direct(x, w, padding, dilation):
    """The correlation by a loop over offsets, zero padding by np.pad."""
    kernel = w.shape[2]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    length = x.shape[2] + 2 * padding - dilation * (kernel - 1)
    y = np.zeros((x.shape[0], w.shape[0], length))
    for k in range(kernel):
        window = padded[:, :, dilation * k : dilation * k + length]
        y += np.einsum("oc,bci->boi", w[:, :, k], window)
    return y


@pytest.mark.parametrize("kernel_size, padding, dilation", CONFIGS)
def test_correlation_matches_a_loop_and_finite_differences(
    kernel_size, padding, dilation
):
    layer = layer_class(correlation_model(padding, dilation))(3, 2, kernel_size)
    rng = np.random.default_rng(kernel_size * 100 + padding * 10 + dilation)
    layer.w[...] = rng.normal(size=layer.w.shape)
    x = rng.normal(size=(2, 3, 7))
    expected = direct(x, layer.w, padding, dilation)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    report = check_gradients(layer, x, rng=rng)
    assert report.passed, str(report)


def test_correlation_takes_the_matrix_product_path():
    text = emit_module(correlation_model(1, 2), "correlation1d").text
    assert "sliding_window_view(" not in text
    # Forward, input gradient: one product and K shifted adds; weight gradient:
    # one product per offset.
    assert text.count("np.matmul(") == 3


def test_conv2d_stride1_passes_take_it_and_strided_ones_keep_einsum():
    text = emit_module(build("conv2d"), "conv2d").text
    stride1 = text[text.index("def _forward_train_stride1") :]
    stride1 = stride1[: stride1.index("def _backward_train(")]
    stride1 += text[text.index("def _backward_train_stride1") :]
    assert "np.matmul(" in stride1
    # Windows only as the fallback: a kernel far wider than the image, or a
    # weight gradient that met inf or NaN.
    for line in stride1.splitlines():
        if "sliding_window_view(" in line:
            assert line.startswith(" " * 12)
    fallbacks = re.findall(r"^ {8}if c\d+ is None:$", stride1, re.MULTILINE)
    assert len(fallbacks) == 3
    strided = text[text.index("def _backward_train(") :]
    strided = strided[: strided.index("def _backward_train_stride1")]
    assert "sliding_window_view(" in strided


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_keeps_the_dtype_and_returns_contiguous_arrays(dtype):
    from layers.generated import Conv2d

    conv = Conv2d(3, 4, 3, rng=0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 6, 5)).astype(dtype)
    y = conv.forward(x)
    input_grad = conv.backward(x, rng.normal(size=y.shape).astype(dtype))
    assert y.dtype == dtype and input_grad.dtype == dtype
    assert y.flags.c_contiguous and input_grad.flags.c_contiguous


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    image=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    kernel_size=st.integers(1, 4),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["same", 0, 1, 3]),
    float32=st.booleans(),
)
def test_conv2d_stride1_matches_torch_on_any_shape(
    batch, channels, image, kernel_size, dilation, padding, float32
):
    """Images smaller than the kernel, a batch of one, one channel: the flat
    plane's extents and offsets must hold for every shape PyTorch accepts."""
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed; the cross-check is skipped"
    )
    from layers.generated import Conv2d

    conv = Conv2d(*channels, kernel_size, 1, padding, dilation, rng=0)
    rng = np.random.default_rng(kernel_size + 10 * dilation)
    dtype = np.float32 if float32 else np.float64
    x = rng.normal(size=(batch, channels[0], *image)).astype(dtype)
    reach = dilation * (kernel_size - 1)
    assume(padding == "same" or min(image) + 2 * padding - reach >= 1)
    y = conv.forward(x)
    output_grad = rng.normal(size=y.shape).astype(dtype)
    input_grad = conv.backward(x, output_grad)

    leaves = [
        torch.tensor(a.astype(np.float64), requires_grad=True)
        for a in (x, conv.W, conv.b)
    ]
    expected = torch.nn.functional.conv2d(*leaves, 1, padding, dilation)
    grads = torch.autograd.grad(expected, leaves, torch.tensor(output_grad * 1.0))
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if float32 else {"rtol": 1e-10}
    np.testing.assert_allclose(y, expected.detach().numpy(), **tolerance)
    for ours, theirs in zip((input_grad, conv.gradW, conv.gradb), grads, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), **tolerance)
    assert y.dtype == dtype and input_grad.dtype == dtype


def direct_weight_gradient(x, output_grad, kernel_size, padding):
    """sum over b, i, j of output_grad * x at each kernel offset, valid positions
    only (as PyTorch sums them): an inf meets only the offsets that read it."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows, columns = output_grad.shape[2:]
    grad = np.empty((output_grad.shape[1], x.shape[1], kernel_size, kernel_size))
    for kh, kw in itertools.product(range(kernel_size), repeat=2):
        window = padded[:, :, kh : kh + rows, kw : kw + columns]
        grad[:, :, kh, kw] = np.einsum("boij,bcij->oc", output_grad, window)
    return grad


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("special", [np.inf, np.nan])
def test_conv2d_weight_gradient_keeps_inf_to_the_offsets_that_read_it(padding, special):
    """Past each row's end the plane's products meet zeros; 0 * inf there must
    not turn the other offsets' weight gradients into NaN."""
    from layers.generated import Conv2d

    conv = Conv2d(1, 2, 3, padding=padding, rng=0)
    x = normal((1, 1, 4, 4))
    x[0, 0, 0, 3] = special
    output_grad = normal(conv.forward(x).shape, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv.backward(x, output_grad)
    expected = direct_weight_gradient(x, output_grad, 3, padding)
    np.testing.assert_array_equal(np.isfinite(conv.gradW), np.isfinite(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(conv.gradW[finite], expected[finite], rtol=1e-12)


def test_conv2d_kernel_far_wider_than_the_image_stays_small():
    """A 41x41 kernel on a 1x1 image: the flat plane's rows would be all but
    padding (its im2col 70 MB), so the windows' einsum does it (2 MB)."""
    from layers.generated import Conv2d

    conv = Conv2d(8, 8, 41, rng=0)
    x = normal((16, 8, 1, 1))
    tracemalloc.start()
    try:
        y = conv.forward(x)
        conv.backward(x, normal(y.shape, seed=1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
