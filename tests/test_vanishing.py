"""Adjoints proved identically zero are dropped; all others are kept."""

import numpy as np
import sympy as sp

from codegen.emit_module import emit_module
from codegen.load import layer_class
from derivations import derive_backward
from derivations.calculus import FreshIndices, Term
from derivations.identities import sum_definitions
from derivations.models import build
from derivations.vanishing import vanishes
from layers.gradcheck import check_gradients
from tests.helpers import shifted_model


def _centred(x, xs, mean, b, n):
    return (xs[b, n] - mean[n]) ** 3


def _not_centred(x, xs, mean, b, n):
    return xs[b, n] ** 2 - mean[n]


def test_batch_norm_drops_the_shift_gradient():
    backward = derive_backward(build("batch_normalization"), "train")
    assert backward.vanished == ["grad_shift"]
    assert backward.gradient("shift") is None
    assert str(backward.gradient("x").expression) == "grad_xs[b, n]"
    text = emit_module(build("batch_normalization"), "batch_normalization").text
    assert "grad_shift" not in text


def test_log_softmax_drops_the_shift_gradient_and_softmax_keeps_what_it_cannot_prove():
    assert derive_backward(build("log_softmax"), "train").vanished == ["grad_shift"]
    # SoftMax is shift-invariant too, but through exp: the identities do not
    # show it, so its shift gradient stays, which is only slower, not wrong.
    softmax = derive_backward(build("softmax"), "train")
    assert softmax.gradient("shift") is not None


def test_a_shift_that_cancels_in_the_output_gets_no_gradient():
    """(xs - mean)**3 does not change when every sample moves by one amount."""
    model = shifted_model(_centred, "Centred")
    backward = derive_backward(model, "train")
    assert backward.vanished == ["grad_shift"]
    assert [a.name for a in backward.adjoints if a.target == "x"] == ["input_grad"]
    x = np.random.default_rng(0).normal(size=(5, 3))
    assert check_gradients(layer_class(model)(), x, rng=1).passed


def test_a_shift_that_stays_in_the_output_keeps_its_gradient():
    """xs**2 - mean moves with the shift: its gradient is not zero."""
    model = shifted_model(_not_centred, "NotCentred")
    backward = derive_backward(model, "train")
    assert backward.vanished == []
    assert backward.gradient("shift") is not None
    x = np.random.default_rng(0).normal(size=(5, 3))
    assert check_gradients(layer_class(model)(), x, rng=1).passed


def test_vanishes_only_on_an_exact_zero():
    model = shifted_model(_centred, "Centred")
    definitions = model.modes["train"].definitions
    identities = sum_definitions(definitions)
    xs, mean = definitions[1].base, definitions[2].base
    b, n = model.indices
    grad = sp.IndexedBase("grad_d")
    known = {"grad_d": ((b, n), (xs[b, n] - mean[n]) * sp.Symbol("g"))}
    summed = [Term((b,), grad[b, n])]
    assert vanishes(summed, known, FreshIndices(), model.indices, identities)
    assert not vanishes(summed, known, FreshIndices(), model.indices, ())
    known = {"grad_d": ((b, n), xs[b, n] * sp.Symbol("g"))}
    assert not vanishes(summed, known, FreshIndices(), model.indices, identities)
