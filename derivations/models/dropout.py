"""Dropout: in training, each entry is kept with probability 1 - p and scaled.

``y[b, n] = x[b, n] * mask[b, n] * scale`` with ``mask`` a 0/1 keep mask drawn
once per training forward pass and reused by backward, and ``scale = 1/(1 - p)``
for ``p < 1``; with ``p = 1`` nothing is kept and ``scale = 0``, so nothing
divides by zero. Evaluation is the identity. The input may have any number of
axes; the model reads it as (batch, features) and the runtime flattens.
"""

from sympy import Piecewise

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "Dropout",
        "Zeroes entries at random in training and rescales the rest.",
        source="derivations/models/dropout.py",
    )
    B = model.size("B", example=256)
    N = model.size("N", example=1024)
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "..."))
    p = model.constant("p", 0.5, check=(0.0, 1.0))
    mask = model.random("mask", (b, n))
    scale = Piecewise((1 / (1 - p), p < 1), (0, True))

    with model.mode("train"):
        model.define("y", (b, n), x[b, n] * mask[b, n] * scale)
    with model.mode("evaluate"):
        model.define("y", (b, n), x[b, n])
    return model
