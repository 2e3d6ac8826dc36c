"""Cross-checks of the reference layers against PyTorch's autograd, in float64."""

import numpy as np
import pytest

from layers.reference import BatchNormalization, ChannelwiseScaling, Conv2d, Dropout

torch = pytest.importorskip(
    "torch", reason="PyTorch is an optional oracle for the reference layers"
)
functional = pytest.importorskip("torch.nn.functional")


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def leaf(array):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def run_torch(function, output_grad, *inputs):
    """Returns the output of ``function`` and the gradient of each input."""
    output = function(*inputs)
    output.backward(torch.tensor(output_grad))
    return output.detach().numpy(), [tensor.grad.numpy() for tensor in inputs]


def test_batch_normalization_training_matches_torch():
    alpha, batch = 0.2, 6
    layer = BatchNormalization(alpha=alpha)
    x, output_grad = 1.0 + 2.0 * normal((batch, 4)), normal((batch, 4), seed=1)
    running_mean, running_var = (
        torch.zeros(4, dtype=torch.float64),
        torch.ones(4, dtype=torch.float64),
    )

    def batch_norm(tensor):
        return functional.batch_norm(
            tensor,
            running_mean,
            running_var,
            training=True,
            momentum=1 - alpha,
            eps=BatchNormalization.EPS,
        )

    expected, (expected_grad,) = run_torch(batch_norm, output_grad, leaf(x))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        layer.backward(x, output_grad), expected_grad, rtol=1e-10, atol=1e-12
    )

    np.testing.assert_allclose(layer.moving_mean, running_mean.numpy(), rtol=1e-12)
    # PyTorch keeps the unbiased variance; ours is the biased one.
    biased = np.var(x, axis=0, ddof=0)
    np.testing.assert_allclose(
        layer.moving_variance, alpha + (1 - alpha) * biased, rtol=1e-12
    )
    unbiased_in_torch = (running_var.numpy() - alpha) / (1 - alpha)
    np.testing.assert_allclose(unbiased_in_torch * (batch - 1) / batch, biased)


def test_batch_normalization_evaluation_matches_torch():
    layer = BatchNormalization(alpha=0.5)
    layer.forward(3.0 + normal((8, 3), seed=2))
    layer.evaluate()
    x, output_grad = normal((5, 3)), normal((5, 3), seed=1)

    def batch_norm(tensor):
        return functional.batch_norm(
            tensor,
            torch.tensor(layer.moving_mean),
            torch.tensor(layer.moving_variance),
            training=False,
            eps=BatchNormalization.EPS,
        )

    expected, (expected_grad,) = run_torch(batch_norm, output_grad, leaf(x))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    np.testing.assert_allclose(
        layer.backward(x, output_grad), expected_grad, rtol=1e-12
    )


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_conv2d_matches_torch(kernel_size):
    layer = Conv2d(3, 4, kernel_size, rng=0)
    x, output_grad = normal((2, 3, 6, 5)), normal((2, 4, 6, 5), seed=1)

    def conv2d(tensor, weight, bias):
        return functional.conv2d(tensor, weight, bias, padding=kernel_size // 2)

    expected, (grad_x, grad_w, grad_b) = run_torch(
        conv2d, output_grad, leaf(x), leaf(layer.W), leaf(layer.b)
    )
    tolerance = {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(layer.forward(x), expected, **tolerance)
    np.testing.assert_allclose(layer.backward(x, output_grad), grad_x, **tolerance)
    np.testing.assert_allclose(layer.gradW, grad_w, **tolerance)
    np.testing.assert_allclose(layer.gradb, grad_b, **tolerance)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
def test_dropout_matches_torch_given_the_same_mask(p):
    layer = Dropout(p, rng=4)
    x, output_grad = normal((5, 6)), normal((5, 6), seed=1)
    output = layer.forward(x)
    mask = torch.tensor(layer.mask)

    expected, (expected_grad,) = run_torch(
        lambda tensor: tensor * mask / (1 - p), output_grad, leaf(x)
    )
    np.testing.assert_allclose(output, expected, rtol=1e-15)
    np.testing.assert_allclose(
        layer.backward(x, output_grad), expected_grad, rtol=1e-15
    )


def test_channelwise_scaling_matches_torch():
    layer = ChannelwiseScaling(4, rng=0)
    x, output_grad = normal((5, 4)), normal((5, 4), seed=1)

    expected, (grad_x, grad_gamma, grad_beta) = run_torch(
        lambda tensor, gamma, beta: tensor * gamma + beta,
        output_grad,
        leaf(x),
        leaf(layer.gamma),
        leaf(layer.beta),
    )
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-15)
    np.testing.assert_allclose(layer.backward(x, output_grad), grad_x, rtol=1e-15)
    np.testing.assert_allclose(layer.gradGamma, grad_gamma, rtol=1e-12)
    np.testing.assert_allclose(layer.gradBeta, grad_beta, rtol=1e-12)
