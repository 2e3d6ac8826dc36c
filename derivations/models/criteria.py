"""Criteria: a scalar loss of an input and a target, averaged over the batch.

``MSECriterion``: ``sum_{b, n} (x[b, n] - target[b, n])^2 / B``.
``ClassNLLCriterion``: ``-sum_{b, n} target[b, n] * x[b, n] / B`` for
log-probabilities ``x`` and a one-hot ``target`` (integer class indices are
turned into one-hot rows by the runtime).
"""

from sympy import Eq, Piecewise, Sum

from derivations.notation import Model


def _criterion(name, summary, loss, classes):
    model = Model(name, summary, source="derivations/models/criteria.py")
    model.kind = "criterion"
    B = model.size("B", example=64)
    N = model.size("N", example=10)
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    target = model.target("target", (b, n), classes=classes)
    with model.mode("train"):
        total = Sum(loss(x[b, n], target[b, n]), (b, 0, B - 1), (n, 0, N - 1))
        model.define("loss", (), total / B)
    return model


def build_mse() -> Model:
    return _criterion(
        "MSECriterion",
        "Sum of squared differences, divided by the batch size.",
        lambda value, target: (value - target) ** 2,
        classes=False,
    )


def build_class_nll() -> Model:
    return _criterion(
        "ClassNLLCriterion",
        "Mean over the batch of minus the target class's log-probability.",
        # Only the target entries count: a log-probability of -inf outside the
        # target class (a masked class) must not make 0 * -inf = NaN.
        lambda value, target: Piecewise((0, Eq(target, 0)), (-target * value, True)),
        classes=True,
    )
