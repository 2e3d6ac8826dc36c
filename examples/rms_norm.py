"""A layer the library does not ship, written from scratch: RMS normalization.

``y[b, n] = x[b, n] / rms[b] * gamma[n]`` with
``rms[b] = sqrt(sum_n x[b, n]^2 / N + EPS)``. Generate it with
``python -m codegen examples/rms_norm.py --out my_layers``.
"""

from sympy import Sum, sqrt

from derivations import Model


def build() -> Model:
    model = Model(
        "RMSNormalization",
        "Divides each sample by its root mean square.",
        source="examples/rms_norm.py",
    )
    B = model.size("B", example=64)
    N = model.size("N", example=512, bound_to="n_features")
    model.argument("n_features")
    b, n = model.index("b", B), model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "n_features"))
    eps = model.constant("EPS", 1e-6, kind="class_attribute")
    gamma = model.parameter("gamma", (n,), "gamma", "gradGamma", init="ones")
    with model.mode("train"):
        rms = model.define(
            "rms", (b,), sqrt(Sum(x[b, n] ** 2, (n, 0, N - 1)) / N + eps)
        )
        model.define("y", (b, n), x[b, n] / rms[b] * gamma[n])
    return model
