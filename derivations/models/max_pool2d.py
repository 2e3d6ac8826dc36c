"""2-D max pooling: the largest entry of each window.

``y[b, c, i, j] = max_{kh, kw} x[b, c, S*i + kh, S*j + kw]`` with window width K
and stride S (K when not given). The gradient goes to the position of each
window's maximum; when entries tie, to the first in row-major order, as
PyTorch does.
"""

from derivations.notation import Maximum, Model


def build() -> Model:
    model = Model(
        "MaxPool2d",
        "Keeps the largest entry of each window of a (batch, channel, row, column) "
        "input.",
        source="derivations/models/max_pool2d.py",
    )
    B = model.size("B", example=16)
    C = model.size("C", example=16)
    H = model.size("H", example=32)
    W = model.size("W", example=32)
    K = model.size("K", example=2, bound_to="kernel_size")
    S = model.size("S", example=2, bound_to="kernel_size if stride is None else stride")
    Ho = model.size(
        "Ho",
        example=16,
        needs="an input at least as large as the kernel",
        bound_to="(H - K) // S + 1",
    )
    Wo = model.size(
        "Wo",
        example=16,
        needs="an input at least as large as the kernel",
        bound_to="(W - K) // S + 1",
    )
    model.argument("kernel_size")
    model.argument("stride", None, kind="optional_positive_int")
    b = model.index("b", B)
    c = model.index("c", C)
    h = model.index("h", H)
    w = model.index("w", W)
    i = model.index("i", Ho)
    j = model.index("j", Wo)
    kh = model.index("kh", K)
    kw = model.index("kw", K)
    x = model.input("x", (b, c, h, w), layout=("batch", "C", "H", "W"))
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            window = x[b, c, S * i + kh, S * j + kw]
            y = model.define(
                "y", (b, c, i, j), Maximum(window, (kh, 0, K - 1), (kw, 0, K - 1))
            )
            # Where each maximum was: finding it again is most of a backward.
            model.keep_for_backward(y)
    return model
