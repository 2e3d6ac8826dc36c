"""SoftMax and LogSoftMax over the last axis of a (batch, n) input.

Both subtract each row's maximum first, so that logits of 1000 and -1000 give
finite results: ``shift[b] = max_n x[b, n]``,
``softmax[b, n] = exp(x[b, n] - shift[b]) / sum_m exp(x[b, m] - shift[b])``,
``logsoftmax[b, n] = x[b, n] - shift[b] - log(sum_m exp(x[b, m] - shift[b]))``.
The shift cancels in the value. For LogSoftMax the engine proves that the
shift's gradient is zero and drops it; for SoftMax it cannot (the shift cancels
only through exp), so it differentiates through the row's argmax, and those
terms cancel numerically.
"""

from sympy import Sum, exp, log

from derivations.notation import Maximum, Model


def _model(name, summary):
    model = Model(name, summary, source="derivations/models/softmax.py")
    B = model.size("B", example=64)
    N = model.size("N", example=10)
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    return model, x, b, n, N


def build_softmax() -> Model:
    model, x, b, n, N = _model("SoftMax", "Exponentiates and normalizes each row.")
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            shift = model.define("shift", (b,), Maximum(x[b, n], (n, 0, N - 1)))
            e = model.define("e", (b, n), exp(x[b, n] - shift[b]))
            total = model.define("total", (b,), Sum(e[b, n], (n, 0, N - 1)))
            model.define("y", (b, n), e[b, n] / total[b])
    return model


def build_log_softmax() -> Model:
    model, x, b, n, N = _model(
        "LogSoftMax", "The logarithm of SoftMax, computed stably."
    )
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            shift = model.define("shift", (b,), Maximum(x[b, n], (n, 0, N - 1)))
            # Shifted first, so that 1000 - 1000 is exact before log(total).
            z = model.define("z", (b, n), x[b, n] - shift[b])
            total = model.define("total", (b,), Sum(exp(z[b, n]), (n, 0, N - 1)))
            model.define("y", (b, n), z[b, n] - log(total[b]))
    return model
