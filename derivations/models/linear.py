"""Fully connected layer: ``y[b, o] = sum_i W[o, i] * x[b, i] + bias[o]``."""

from sympy import Sum

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "Linear",
        "Multiplies each sample by a learnable matrix and adds a bias.",
        source="derivations/models/linear.py",
    )
    B = model.size("B", example=64)
    I = model.size("I", example=256, bound_to="n_in")  # noqa: E741
    O = model.size("O", example=128, bound_to="n_out")  # noqa: E741
    model.argument("n_in")
    model.argument("n_out")
    model.init_scale = "1.0 / np.sqrt(n_in)"
    b = model.index("b", B)
    i = model.index("i", I)
    o = model.index("o", O)
    x = model.input("x", (b, i), layout=("batch", "n_in"))
    weight = model.parameter("W", (o, i), "W", "gradW")
    bias = model.parameter("bias", (o,), "b", "gradb")
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            model.define(
                "y", (b, o), Sum(weight[o, i] * x[b, i], (i, 0, I - 1)) + bias[o]
            )
    return model
