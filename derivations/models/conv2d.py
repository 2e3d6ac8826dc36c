"""2-D convolution (cross-correlation) with stride 1 and zero 'same' padding.

``y[b, o, h, w] = sum_{c, kh, kw} W[o, c, kh, kw] * x[b, c, h + kh - P, w + kw - P]
+ bias[o]`` with ``P = K // 2`` for an odd kernel width K. A read of x outside
its range is zero: that is the padding.
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
    P = model.derived_size("P", "kernel_size // 2", example=1)
    model.argument("in_channels")
    model.argument("out_channels")
    model.argument("kernel_size")
    model.require(
        "kernel_size % 2 == 1",
        "an odd kernel_size, so that the 'same' padding is symmetric",
    )
    model.init_scale = "1.0 / np.sqrt(in_channels)"
    b = model.index("b", B)
    c = model.index("c", C)
    o = model.index("o", O)
    h = model.index("h", H)
    w = model.index("w", W)
    kh = model.index("kh", K)
    kw = model.index("kw", K)
    x = model.input("x", (b, c, h, w), layout=("batch", "in_channels", "H", "W"))
    weight = model.parameter("W", (o, c, kh, kw), "W", "gradW")
    bias = model.parameter("bias", (o,), "b", "gradb")

    for mode in ("train", "evaluate"):
        with model.mode(mode):
            correlation = Sum(
                weight[o, c, kh, kw] * x[b, c, h + kh - P, w + kw - P],
                (c, 0, C - 1),
                (kh, 0, K - 1),
                (kw, 0, K - 1),
            )
            model.define("y", (b, o, h, w), correlation + bias[o])
    return model
