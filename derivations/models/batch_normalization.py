"""Batch normalization of a (batch, feature) input.

Training normalizes each feature with the batch mean and the biased batch
variance and updates the moving averages; evaluation normalizes with the moving
averages.
"""

from sympy import Sum, sqrt

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "BatchNormalization",
        "Normalizes each feature over the batch.",
        source="derivations/models/batch_normalization.py",
    )
    B = model.size("B", example=256)
    N = model.size("N", example=1024)
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    eps = model.constant("EPS", 1e-3, kind="class_attribute")
    alpha = model.constant("alpha", 0.0, check=(0.0, 1.0))
    moving_mean = model.state("moving_mean", (n,), init="zeros")
    moving_variance = model.state("moving_variance", (n,), init="ones")

    with model.mode("train"):
        # Shifted by the first sample: a constant feature is then exactly zero
        # (x - shift is), and float32 sums stay small. The shift cancels in y.
        shift = model.define("shift", (n,), x[0, n])
        xs = model.define("xs", (b, n), x[b, n] - shift[n])
        mean = model.define("mean", (n,), Sum(xs[b, n], (b, 0, B - 1)) / B)
        var = model.define(
            "var", (n,), Sum((xs[b, n] - mean[n]) ** 2, (b, 0, B - 1)) / B
        )
        model.define("y", (b, n), (xs[b, n] - mean[n]) / sqrt(var[n] + eps))
        # Two passes over the input that a backward on the same input skips.
        model.keep_for_backward(shift, mean, var)
        model.update(
            moving_mean,
            (n,),
            moving_mean[n] * alpha + (mean[n] + shift[n]) * (1 - alpha),
        )
        model.update(
            moving_variance, (n,), moving_variance[n] * alpha + var[n] * (1 - alpha)
        )

    with model.mode("evaluate"):
        model.define(
            "y", (b, n), (x[b, n] - moving_mean[n]) / sqrt(moving_variance[n] + eps)
        )
    return model
