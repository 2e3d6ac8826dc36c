"""Layer configurations and NumPy formulas shared by the catalog's test modules.

Central differences (``test_catalog_layers``) and PyTorch (``test_catalog_vs_torch``)
check the same configurations against the same stable formulas.
"""

import itertools

import numpy as np

from layers import generated
from tests.helpers import normal

# The image every Conv2d configuration is fed: (batch, channels, rows, columns).
IMAGE = (2, 2, 5, 6)

# Every valid combination: 'same' padding needs stride 1.
CONV_GRID = [
    (kernel_size, stride, padding, dilation, bias)
    for kernel_size, stride, padding, dilation, bias in itertools.product(
        (1, 2, 3), (1, 2), ("same", 0, 1), (1, 2), (True, False)
    )
    if padding != "same" or stride == 1
]


def conv_id(config):
    """A test id such as ``k3_s2_p1_d2_nobias``."""
    kernel_size, stride, padding, dilation, bias = config
    bias_id = "bias" if bias else "nobias"
    return f"k{kernel_size}_s{stride}_p{padding}_d{dilation}_{bias_id}"


def conv2d(config):
    """A Conv2d from 2 to 3 channels with a configuration of ``CONV_GRID``."""
    kernel_size, stride, padding, dilation, bias = config
    return generated.Conv2d(
        2, 3, kernel_size, stride, padding, dilation, bias=bias, rng=0
    )


def conv_output_size(size, config):
    """PyTorch's output size along one axis."""
    kernel_size, stride, padding, dilation, _ = config
    if padding == "same":
        return size
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


# Logits whose naive exponentials overflow to inf or underflow to 0.
EXTREME_LOGITS = np.array(
    [[1000.0, -1000.0, 0.0], [1000.0, 1000.0, -1000.0], [-1000.0, -1000.0, -999.0]]
)


def stable_softmax(x):
    """SoftMax over the last axis, each row shifted by its maximum first."""
    shifted = x - x.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def stable_log_softmax(x):
    """LogSoftMax over the last axis; ``x - max`` is exact, so is log(1/2)."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_probabilities(shape, seed=0):
    """Random rows of log-probabilities, the input of ClassNLLCriterion."""
    return stable_log_softmax(normal(shape, seed))


def class_indices(shape, seed=0):
    """A random class index per row of an input of ``shape`` (batch, classes)."""
    batch, classes = shape
    return np.random.default_rng(seed).integers(0, classes, size=batch)


def one_hot(indices, classes):
    """The one-hot rows of ``indices``, as float64."""
    return np.eye(classes)[indices]
