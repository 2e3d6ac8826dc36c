"""PyTorch's autograd as an oracle for a package of layers, in float64.

``TorchCrossChecks`` holds the cross-checks once for both packages: a test module
subclasses it and sets ``layers`` to ``layers.reference`` or ``layers.generated``.
PyTorch is optional, so this module imports it only inside the checks; the test
module calls ``pytest.importorskip`` first.
"""

import numpy as np
import pytest

from tests.helpers import normal

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def leaf(array):
    """A float64 tensor that collects its gradient."""
    import torch

    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def run_torch(function, output_grad, *inputs):
    """Returns the output of ``function`` and the gradient of each input."""
    import torch

    output = function(*inputs)
    output.backward(torch.tensor(output_grad))
    return output.detach().numpy(), [tensor.grad.numpy() for tensor in inputs]


class TorchCrossChecks:
    """Forward outputs and every gradient of the four layers against PyTorch."""

    # The package under test: layers.reference or layers.generated.
    layers = None

    @pytest.mark.parametrize("alpha", [0.0, 0.2, 0.9])
    def test_batch_normalization_training_matches_torch(self, alpha):
        import torch
        from torch.nn import functional

        batch, features = 6, 4
        layer = self.layers.BatchNormalization(alpha=alpha)
        running_mean = torch.zeros(features, dtype=torch.float64)
        running_var = torch.ones(features, dtype=torch.float64)

        def batch_norm(tensor):
            return functional.batch_norm(
                tensor,
                running_mean,
                running_var,
                training=True,
                momentum=1 - alpha,
                eps=layer.EPS,
            )

        biased, unbiased = np.ones(features), np.ones(features)
        for seed in range(2):
            x = 1.0 + 2.0 * normal((batch, features), seed=2 * seed)
            output_grad = normal((batch, features), seed=2 * seed + 1)
            expected, (expected_grad,) = run_torch(batch_norm, output_grad, leaf(x))
            np.testing.assert_allclose(layer.forward(x), expected, **TIGHT)
            np.testing.assert_allclose(
                layer.backward(x, output_grad), expected_grad, **TIGHT
            )

            # PyTorch averages the unbiased batch variance; ours is the biased one.
            np.testing.assert_allclose(
                layer.moving_mean, running_mean.numpy(), rtol=1e-12
            )
            biased = alpha * biased + (1 - alpha) * np.var(x, axis=0, ddof=0)
            unbiased = alpha * unbiased + (1 - alpha) * np.var(x, axis=0, ddof=1)
            np.testing.assert_allclose(layer.moving_variance, biased, rtol=1e-12)
            np.testing.assert_allclose(running_var.numpy(), unbiased, rtol=1e-12)

    def test_batch_normalization_evaluation_matches_torch(self):
        import torch
        from torch.nn import functional

        layer = self.layers.BatchNormalization(alpha=0.5)
        layer.forward(3.0 + normal((8, 3), seed=2))
        layer.evaluate()
        x, output_grad = normal((5, 3)), normal((5, 3), seed=1)

        def batch_norm(tensor):
            return functional.batch_norm(
                tensor,
                torch.tensor(layer.moving_mean),
                torch.tensor(layer.moving_variance),
                training=False,
                eps=layer.EPS,
            )

        expected, (expected_grad,) = run_torch(batch_norm, output_grad, leaf(x))
        np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
        np.testing.assert_allclose(
            layer.backward(x, output_grad), expected_grad, rtol=1e-12
        )

    @pytest.mark.parametrize("image", [(6, 5), (5, 7)], ids=["6x5", "5x7"])
    @pytest.mark.parametrize("kernel_size", [1, 3, 5])
    def test_conv2d_matches_torch(self, kernel_size, image):
        from torch.nn import functional

        layer = self.layers.Conv2d(3, 4, kernel_size, rng=0)
        x, output_grad = normal((2, 3, *image)), normal((2, 4, *image), seed=1)

        def conv2d(tensor, weight, bias):
            return functional.conv2d(tensor, weight, bias, padding=kernel_size // 2)

        expected, (grad_x, grad_w, grad_b) = run_torch(
            conv2d, output_grad, leaf(x), leaf(layer.W), leaf(layer.b)
        )
        np.testing.assert_allclose(layer.forward(x), expected, **TIGHT)
        np.testing.assert_allclose(layer.backward(x, output_grad), grad_x, **TIGHT)
        np.testing.assert_allclose(layer.gradW, grad_w, **TIGHT)
        np.testing.assert_allclose(layer.gradb, grad_b, **TIGHT)

    @pytest.mark.parametrize("shape", [(5, 6), (4, 3, 2)])
    @pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
    def test_dropout_matches_torch_given_the_same_mask(self, p, shape):
        import torch

        layer = self.layers.Dropout(p, rng=4)
        x, output_grad = normal(shape), normal(shape, seed=1)
        output = layer.forward(x)
        mask = torch.tensor(layer.mask)

        expected, (expected_grad,) = run_torch(
            lambda tensor: tensor * mask / (1 - p), output_grad, leaf(x)
        )
        np.testing.assert_allclose(output, expected, rtol=1e-15)
        np.testing.assert_allclose(
            layer.backward(x, output_grad), expected_grad, rtol=1e-15
        )

    def test_channelwise_scaling_matches_torch(self):
        layer = self.layers.ChannelwiseScaling(4, rng=0)
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
