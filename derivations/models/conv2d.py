"""2-D convolution (cross-correlation), as PyTorch's ``conv2d`` defines it.

``y[b, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw]
* x[b, c, S*i + D*kh - P, S*j + D*kw - P] + bias[o]`` with stride S, dilation
D and top/left padding P. A read of x outside its range is zero: that is the
padding. ``padding="same"`` (stride 1 only) pads ``D*(K-1)`` in all, the extra
row and column at the bottom and right for an even kernel, as PyTorch does;
an int pads that many on each side. The course's layer is the default:
stride 1, 'same' padding, odd kernel.
"""

from sympy import Sum

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "Conv2d",
        "Correlates a (batch, channel, row, column) input with learnable kernels.",
        source="derivations/models/conv2d.py",
    )
    B = model.size("B", example=16)
    C = model.size("C", example=32, bound_to="in_channels")
    O = model.size("O", example=64, bound_to="out_channels")  # noqa: E741
    H = model.size("H", example=32)
    W = model.size("W", example=32)
    K = model.size("K", example=3, bound_to="kernel_size")
    S = model.size("S", example=1, bound_to="stride")
    D = model.size("D", example=1, bound_to="dilation")
    P = model.derived_size(
        "P", "D * (K - 1) // 2 if padding == 'same' else padding", example=1
    )
    # With 'same' padding the extra row and column of an even kernel go at the
    # bottom and right: reads past the end are zero, so only P (top/left) shows.
    Ho = model.size(
        "Ho",
        needs="an input at least as large as the (dilated) kernel with its padding",
        example=32,
        bound_to="H if padding == 'same' else (H + 2 * P - D * (K - 1) - 1) // S + 1",
    )
    Wo = model.size(
        "Wo",
        needs="an input at least as large as the (dilated) kernel with its padding",
        example=32,
        bound_to="W if padding == 'same' else (W + 2 * P - D * (K - 1) - 1) // S + 1",
    )
    for name in ("in_channels", "out_channels", "kernel_size"):
        model.argument(name)
    model.argument("stride", 1, kind="positive_int")
    model.argument("padding", "same", kind="padding")
    model.argument("dilation", 1, kind="positive_int")
    model.argument("bias", True, kind="bool")
    model.require(
        "padding != 'same' or stride == 1",
        "stride 1 with padding='same' (as PyTorch does)",
    )
    model.init_scale = "1.0 / np.sqrt(in_channels)"
    b = model.index("b", B)
    c = model.index("c", C)
    o = model.index("o", O)
    h = model.index("h", H)
    w = model.index("w", W)
    i = model.index("i", Ho)
    j = model.index("j", Wo)
    kh = model.index("kh", K)
    kw = model.index("kw", K)
    x = model.input("x", (b, c, h, w), layout=("batch", "in_channels", "H", "W"))
    weight = model.parameter("W", (o, c, kh, kw), "W", "gradW")
    bias = model.parameter("bias", (o,), "b", "gradb", enabled_by="bias")

    for mode in ("train", "evaluate"):
        with model.mode(mode):
            correlation = Sum(
                weight[o, c, kh, kw] * x[b, c, S * i + D * kh - P, S * j + D * kw - P],
                (c, 0, C - 1),
                (kh, 0, K - 1),
                (kw, 0, K - 1),
            )
            model.define("y", (b, o, i, j), correlation + bias[o])
    # With stride 1 the input gradient is a shifted read of output_grad (a
    # correlation with the flipped kernel) instead of a scatter.
    model.specialize("stride == 1", {S: 1}, "stride1")
    return model
