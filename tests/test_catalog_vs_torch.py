"""The catalog's generated layers against PyTorch's autograd, in float64.

Each test feeds the same input, parameters and random ``output_grad`` to a
generated layer and to the matching ``torch.nn.functional`` call, and compares
the output and every gradient. Inputs of the activations include exact zeros,
where both libraries take the derivative of the negative side.
"""

import numpy as np
import pytest

from layers import generated
from tests.catalog_cases import (
    CONV_GRID,
    EXTREME_LOGITS,
    IMAGE,
    class_indices,
    conv2d,
    conv_id,
    log_probabilities,
    one_hot,
)
from tests.helpers import normal, randomize_parameters
from tests.torch_oracle import TIGHT, leaf, run_torch

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the cross-check against it is skipped"
)
functional = torch.nn.functional


def assert_layer_matches_torch(layer, function, x, parameters=()):
    """Compares ``layer`` with ``function(x, *parameters)``, every gradient too.

    ``parameters`` are the layer's own arrays, in the order ``function`` takes
    them and the layer's ``get_parameters_grad()`` returns their gradients.
    """
    output_grad = normal(layer.forward(x).shape, seed=1)
    expected, (grad_x, *grad_parameters) = run_torch(
        function, output_grad, leaf(x), *map(leaf, parameters)
    )
    np.testing.assert_allclose(layer.forward(x), expected, **TIGHT)
    layer.zero_grad()
    np.testing.assert_allclose(layer.backward(x, output_grad), grad_x, **TIGHT)
    grads = layer.get_parameters_grad()
    assert len(grads) == len(grad_parameters)
    for grad, expected_grad in zip(grads, grad_parameters, strict=True):
        np.testing.assert_allclose(grad, expected_grad, **TIGHT)


@pytest.mark.parametrize(("n_in", "n_out", "batch"), [(4, 3, 5), (1, 2, 3), (6, 1, 2)])
def test_linear_matches_torch(n_in, n_out, batch):
    layer = randomize_parameters(generated.Linear(n_in, n_out), seed=3)
    assert_layer_matches_torch(
        layer, functional.linear, normal((batch, n_in)), (layer.W, layer.b)
    )


def with_zeros(shape, scale):
    x = scale * normal(shape)
    x.flat[::3] = 0.0
    return x


ACTIVATIONS = [
    ("relu", generated.ReLU, functional.relu),
    # The course's default slope is 0.03; PyTorch's is 0.01.
    (
        "leaky_relu",
        generated.LeakyReLU,
        lambda x: functional.leaky_relu(x, negative_slope=0.03),
    ),
    (
        "leaky_relu_0.2",
        lambda: generated.LeakyReLU(slope=0.2),
        lambda x: functional.leaky_relu(x, negative_slope=0.2),
    ),
    ("elu", generated.ELU, functional.elu),
    (
        "elu_0.5",
        lambda: generated.ELU(alpha=0.5),
        lambda x: functional.elu(x, alpha=0.5),
    ),
    ("softplus", generated.SoftPlus, functional.softplus),
]


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4)])
@pytest.mark.parametrize(
    ("build", "function"),
    [row[1:] for row in ACTIVATIONS],
    ids=[row[0] for row in ACTIVATIONS],
)
def test_activations_match_torch(build, function, shape):
    # Below 15, PyTorch's softplus has not yet switched to returning x itself.
    assert_layer_matches_torch(build(), function, with_zeros(shape, scale=4.0))


def test_softplus_matches_torch_at_extreme_inputs():
    """Beyond its threshold of 20 PyTorch returns x, within rounding of ours."""
    x = np.array([[-800.0, -40.0, -25.0, 25.0, 40.0, 800.0]])
    assert_layer_matches_torch(generated.SoftPlus(), functional.softplus, x)


@pytest.mark.parametrize("logits", ["moderate", "extreme"])
@pytest.mark.parametrize(
    ("build", "function"),
    [(generated.SoftMax, torch.softmax), (generated.LogSoftMax, torch.log_softmax)],
    ids=["softmax", "log_softmax"],
)
def test_softmax_matches_torch(build, function, logits):
    x = EXTREME_LOGITS if logits == "extreme" else 3.0 * normal((4, 5))
    assert_layer_matches_torch(build(), lambda tensor: function(tensor, dim=1), x)


@pytest.mark.parametrize("shape", [(4, 5), (3, 2)])
def test_layer_normalization_matches_torch(shape):
    layer = randomize_parameters(generated.LayerNormalization(shape[1]), seed=3)

    def layer_norm(tensor, gamma, beta):
        return functional.layer_norm(
            tensor, (shape[1],), weight=gamma, bias=beta, eps=layer.EPS
        )

    assert layer.EPS == 1e-5
    assert_layer_matches_torch(
        layer, layer_norm, 1.0 + 2.0 * normal(shape), (layer.gamma, layer.beta)
    )


def assert_loss_matches_torch(criterion, target, function, x):
    """Compares a criterion's loss and input gradient with ``function(x)``."""
    expected, (expected_grad,) = run_torch(function, np.ones(()), leaf(x))
    np.testing.assert_allclose(criterion.forward(x, target), expected, **TIGHT)
    np.testing.assert_allclose(criterion.backward(x, target), expected_grad, **TIGHT)


@pytest.mark.parametrize("shape", [(4, 3), (1, 5)])
def test_mse_matches_torch(shape):
    x, target = normal(shape), normal(shape, seed=2)

    def mse(tensor):
        return functional.mse_loss(tensor, torch.tensor(target), reduction="sum") / len(
            x
        )

    assert_loss_matches_torch(generated.MSECriterion(), target, mse, x)


@pytest.mark.parametrize("target_kind", ["indices", "one_hot"])
@pytest.mark.parametrize("shape", [(4, 3), (1, 5), (6, 2)])
def test_class_nll_matches_torch(shape, target_kind):
    x, indices = log_probabilities(shape), class_indices(shape, seed=2)
    target = indices if target_kind == "indices" else one_hot(indices, shape[1])

    def nll(tensor):
        return functional.nll_loss(tensor, torch.tensor(indices), reduction="mean")

    assert_loss_matches_torch(generated.ClassNLLCriterion(), target, nll, x)


@pytest.mark.parametrize("values", ["random", "tied"])
@pytest.mark.parametrize("stride", [None, 1, 2])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_max_pool2d_matches_torch(kernel_size, stride, values):
    """Rounded inputs tie often; both pick the first maximum in row-major order."""
    x = normal((2, 3, 7, 6))
    if values == "tied":
        x = np.round(x)
        assert len(np.unique(x)) < x.size // 10

    def max_pool(tensor):
        return functional.max_pool2d(tensor, kernel_size, stride)

    assert_layer_matches_torch(generated.MaxPool2d(kernel_size, stride), max_pool, x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("config", CONV_GRID, ids=conv_id)
def test_conv2d_matches_torch(config):
    _, stride, padding, dilation, bias = config
    layer = randomize_parameters(conv2d(config), seed=3)

    def conv(tensor, weight, bias=None):
        return functional.conv2d(tensor, weight, bias, stride, padding, dilation)

    parameters = (layer.W, layer.b) if bias else (layer.W,)
    assert_layer_matches_torch(layer, conv, normal(IMAGE), parameters)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 2, 3, 2), (3, 5)])
def test_flatten_matches_torch(shape):
    assert_layer_matches_torch(
        generated.Flatten(), lambda tensor: torch.flatten(tensor, 1), normal(shape)
    )
