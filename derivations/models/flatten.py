"""Flatten: a (batch, ...) input becomes (batch, features), and back in backward."""

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "Flatten",
        "Reshapes (batch, ...) to (batch, features).",
        source="derivations/models/flatten.py",
    )
    model.flatten_output = True
    B = model.size("B", example=64)
    N = model.size("N", example=1024)
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "..."))
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            model.define("y", (b, n), x[b, n])
    return model
