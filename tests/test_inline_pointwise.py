"""A pointwise definition the backward pass reads inside one sum is written out.

``xs = x - shift`` read only as ``xs - mean`` costs batch normalization's
backward a pass over memory of its own; written out, ``x - shift - mean`` is
one array made in one pass. A definition read in any other way keeps its
array.
"""

import re

import numpy as np

from codegen.emit_module import emit_module
from codegen.load import layer_class
from derivations.models import build
from layers.gradcheck import check_gradients
from tests.helpers import shifted_model


def _backward_source(model, mode="train"):
    text = emit_module(model, model.name.lower()).text
    start = text.index(f"def _backward_{mode}")
    end = text.find("\n    def ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _assigns_xs(source) -> bool:
    return re.search(r"^\s*xs = ", source, re.MULTILINE) is not None


def _model(output_of, name):
    """The backward pass of this model recomputes only xs: shift and mean are
    kept."""
    return shifted_model(
        lambda x, xs, mean, b, n: output_of(xs[b, n], mean[n]), name, keep=True
    )


def test_batch_norm_backward_makes_the_centred_input_in_one_statement():
    source = _backward_source(build("batch_normalization"))
    assert not _assigns_xs(source)
    # The two vectors are added first; the input is read once.
    assert "v0 = -mean[None, :] - shift[None, :] + x\n" in source


def test_a_definition_read_inside_one_sum_is_written_out():
    model = _model(lambda xs, mean: (xs - mean) ** 3, "OneSum")
    source = _backward_source(model)
    assert not _assigns_xs(source)
    x = np.random.default_rng(0).normal(2.0, 1.0, size=(5, 3))
    assert check_gradients(layer_class(model)(), x, rng=1).passed


def test_a_definition_read_in_two_ways_keeps_its_array():
    # xs appears alone in xs * (xs - mean): writing it out would compute
    # x - shift twice.
    model = _model(lambda xs, mean: xs * (xs - mean), "TwoWays")
    source = _backward_source(model)
    assert _assigns_xs(source)
    x = np.random.default_rng(2).normal(2.0, 1.0, size=(5, 3))
    assert check_gradients(layer_class(model)(), x, rng=3).passed


def test_written_out_and_kept_agree_in_float32_on_offset_data():
    """The centred input loses nothing by being made in one statement: a
    feature far from zero still gets the gradient float64 gives."""
    rng = np.random.default_rng(4)
    x = rng.normal(1000.0, 0.5, size=(64, 7))
    output_grad = rng.normal(size=x.shape)
    layer = layer_class(build("batch_normalization"))()
    layer.forward(x)
    expected = layer.backward(x, output_grad)
    x32, g32 = x.astype(np.float32), output_grad.astype(np.float32)
    layer.forward(x32)
    got = layer.backward(x32, g32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max()
    )
