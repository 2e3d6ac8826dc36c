"""Elementwise activations: ReLU, LeakyReLU, ELU and SoftPlus.

Each reads an input of any shape (batch, ...) as (batch, features) and applies
one scalar function to every entry; the derivative at a kink is the one of the
branch the Piecewise condition selects, which is PyTorch's convention too.
"""

from sympy import Abs, Max, Piecewise, exp, log

from derivations.notation import Model


def _elementwise(name, summary, function, constants=()):
    model = Model(name, summary, source="derivations/models/activations.py")
    B = model.size("B", example=64)
    N = model.size("N", example=1024)
    b = model.index("b", B)
    n = model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "..."))
    symbols = [
        model.constant(c, default, check=check) for c, default, check in constants
    ]
    for mode in ("train", "evaluate"):
        with model.mode(mode):
            model.define("y", (b, n), function(x[b, n], *symbols))
    return model


def build_relu() -> Model:
    return _elementwise(
        "ReLU",
        "Keeps positive entries and zeroes the rest.",
        # The zero branch first: NaN fails every comparison, falls through to
        # the last branch and propagates, as in PyTorch.
        lambda v: Piecewise((0, v <= 0), (v, True)),
    )


def build_leaky_relu() -> Model:
    return _elementwise(
        "LeakyReLU",
        "Keeps positive entries and scales the rest by a small slope.",
        lambda v, slope: Piecewise((slope * v, v <= 0), (v, True)),
        constants=[("slope", 0.03, None)],
    )


def build_elu() -> Model:
    return _elementwise(
        "ELU",
        "Keeps positive entries; maps the rest to alpha * (exp(x) - 1).",
        lambda v, alpha: Piecewise((alpha * (exp(v) - 1), v <= 0), (v, True)),
        constants=[("alpha", 1.0, None)],
    )


def build_softplus() -> Model:
    # log(1 + exp(x)) overflows for x above ~709; this form never does.
    return _elementwise(
        "SoftPlus",
        "A smooth ReLU: log(1 + exp(x)), computed without overflow.",
        lambda v: Max(v, 0) + log(1 + exp(-Abs(v))),
    )
