"""Layer normalization: each sample normalized over its features, then scaled.

``y[b, n] = (x[b, n] - mean[b]) / sqrt(var[b] + EPS) * gamma[n] + beta[n]``
with the mean and the biased variance taken over the features of one sample.
"""

from sympy import Sum, sqrt

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "LayerNormalization",
        "Normalizes each sample over its features, then scales and shifts.",
        source="derivations/models/layer_normalization.py",
    )
    B = model.size("B", example=64)
    N = model.size("N", example=1024, bound_to="n_features")
    model.argument("n_features")
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "n_features"))
    eps = model.constant("EPS", 1e-5, kind="class_attribute")
    gamma = model.parameter("gamma", (n,), "gamma", "gradGamma", init="ones")
    beta = model.parameter("beta", (n,), "beta", "gradBeta", init="zeros")
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            mean = model.define("mean", (b,), Sum(x[b, n], (n, 0, N - 1)) / N)
            var = model.define(
                "var", (b,), Sum((x[b, n] - mean[b]) ** 2, (n, 0, N - 1)) / N
            )
            normalized = (x[b, n] - mean[b]) / sqrt(var[b] + eps)
            model.define("y", (b, n), normalized * gamma[n] + beta[n])
            # Two passes over the input that a backward on the same input skips.
            model.keep_for_backward(mean, var)
    return model
