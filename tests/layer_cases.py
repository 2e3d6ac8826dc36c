"""Every layer, generated and reference, with an input shape it accepts.

The hostile-input and numerics tests run each check over this table; a test
fails when a layer of either package has no case, so a new layer gets checked.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from layers import generated, reference
from tests.helpers import forward_backward, normal

G, R = generated, reference
CRITERIA = {"MSECriterion", "ClassNLLCriterion"}


@dataclass(frozen=True)
class Case:
    """A layer and an input shape it accepts.

    Attributes:
        id: the test id.
        build: makes a fresh layer, the same one every time (seeded).
        shape: an input shape the layer accepts.
        fixed: the input axes whose size the layer's parameters fix (for a
            batch normalization, its first input).
        any_rank: the layer takes (batch, ...) with any number of axes.
    """

    id: str
    build: Callable
    shape: tuple
    fixed: tuple = ()
    any_rank: bool = False

    @property
    def name(self):
        return self.id.split("-")[1]


def make_case(package, name, shape, *args, variant="", fixed=(), any_rank=False, **kw):
    prefix = "generated" if package is G else "reference"
    suffix = f"-{variant}" if variant else ""
    build = functools.partial(getattr(package, name), *args, **kw)
    return Case(f"{prefix}-{name}{suffix}", build, shape, fixed, any_rank)


ELEMENTWISE = [(G.ReLU,), (G.LeakyReLU, 0.1), (G.ELU, 0.7), (G.SoftPlus,)]
CASES = [
    *(make_case(P, "BatchNormalization", (4, 3), 0.3, fixed=(1,)) for P in (G, R)),
    *(make_case(P, "ChannelwiseScaling", (4, 3), 3, rng=0, fixed=(1,)) for P in (G, R)),
    *(make_case(P, "Dropout", (4, 3, 2), 0.5, rng=0, any_rank=True) for P in (G, R)),
    *(make_case(P, "Conv2d", (2, 2, 5, 6), 2, 3, 3, rng=0, fixed=(1,)) for P in (G, R)),
    make_case(
        G,
        "Conv2d",
        (2, 2, 7, 6),
        2,
        3,
        3,
        stride=2,
        padding=1,
        dilation=2,
        bias=False,
        rng=0,
        variant="s2",
        fixed=(1,),
    ),
    make_case(G, "Linear", (4, 3), 3, 2, rng=0, fixed=(1,)),
    *(make_case(G, k.__name__, (4, 3, 2), *a, any_rank=True) for k, *a in ELEMENTWISE),
    make_case(G, "LayerNormalization", (4, 3), 3, fixed=(1,)),
    make_case(G, "Flatten", (4, 3, 2), any_rank=True),
    make_case(G, "SoftMax", (4, 3)),
    make_case(G, "LogSoftMax", (4, 3)),
    make_case(G, "MaxPool2d", (2, 2, 4, 5), 2),
    make_case(G, "MaxPool2d", (2, 2, 4, 5), 3, 1, variant="k3s1"),
    # Every axis the parameters allow at size 1: where einsum and NumPy would
    # broadcast a wrong output_grad without a word.
    *(make_case(P, "BatchNormalization", (1, 1), variant="unit") for P in (G, R)),
    *(
        make_case(P, "ChannelwiseScaling", (1, 1), 1, rng=0, variant="unit")
        for P in (G, R)
    ),
    *(
        make_case(P, "Dropout", (1, 1), 0.5, rng=0, variant="unit", any_rank=True)
        for P in (G, R)
    ),
    *(
        make_case(P, "Conv2d", (1, 1, 1, 1), 1, 1, 3, rng=0, variant="unit")
        for P in (G, R)
    ),
    make_case(G, "Linear", (1, 1), 1, 1, rng=0, variant="unit"),
    make_case(G, "LayerNormalization", (1, 1), 1, variant="unit"),
    make_case(G, "SoftMax", (1, 1), variant="unit"),
    make_case(G, "LogSoftMax", (1, 1), variant="unit"),
    make_case(G, "MaxPool2d", (1, 1, 1, 1), 1, variant="unit"),
    make_case(G, "ReLU", (1, 1), variant="unit", any_rank=True),
    make_case(G, "Flatten", (1, 1, 1), variant="unit", any_rank=True),
]


def each_case(select=lambda case: True, xfail=None):
    """Parametrizes over the cases ``select`` keeps.

    ``xfail`` maps a case id to the reason of a strict xfail; the id of a layer
    also marks its variants (``generated-ReLU`` marks ``generated-ReLU-unit``).
    """
    params = []
    for case in filter(select, CASES):
        reasons = [
            reason
            for key, reason in (xfail or {}).items()
            if case.id == key or case.id.startswith(key + "-")
        ]
        marks = [pytest.mark.xfail(strict=True, reason=r) for r in reasons]
        params.append(pytest.param(case, id=case.id, marks=marks))
    return pytest.mark.parametrize("case", params)


def run_case(case, input, output_grad=None, training=True):
    """forward_backward on a fresh layer of ``case`` in the given mode."""
    if output_grad is None:
        output_shape = case.build().forward(input).shape
        output_grad = normal(output_shape, seed=1).astype(np.asarray(input).dtype)
    layer = case.build()
    if not training:
        layer.evaluate()
    return forward_backward(layer, input, output_grad)
