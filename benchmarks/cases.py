"""What the benchmark times: a layer, its sizes, and the PyTorch op it matches.

A case names a layer of ``layers.generated`` (the reference layer of the same
name is timed too, when ``layers.reference`` has one), its sizes at full scale
and at ``--tiny`` scale, and the PyTorch function that computes the same output
from the same parameters. The sizes use the index names of the models: B batch,
N features, C/O input/output channels, H/W rows/columns, K kernel side.

Beside the fixed sizes the performance targets name, the catalog layers run at
the sizes of a small network: a 3x3 convolution, 2x2 max pooling and a flatten
on 28x28 images, then a multilayer perceptron with 512 hidden units and 10
classes, batch 128.
"""

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    """One layer at one size.

    Attributes:
        key: a stable name for the JSON and the targets, e.g. ``conv2d_k3``.
        layer: the class name in ``layers.generated`` (and ``layers.reference``).
        sizes: the full-scale sizes, by index name.
        tiny: the sizes of a ``--tiny`` run.
        describe: the sizes as the table shows them, e.g. ``"B={B} N={N}"``.
        build: ``build(package, sizes)`` makes the layer from a package.
        input_shape: ``input_shape(sizes)``, the shape of the input.
        torch_op: ``torch_op(torch, layer)`` gives ``(function, parameters)``:
            ``function(input, *parameters)`` (a criterion's: ``function(input,
            target)``) computes with PyTorch what the layer computes, and
            ``parameters`` are the layer's arrays it reads.
        target: ``None`` for a layer; ``"values"`` or ``"classes"`` for a
            criterion, whose target is a float array or one-hot rows.
        reference_bytes: ``reference_bytes(sizes, itemsize)`` estimates the
            memory the reference layer's backward needs; None when it is small.
        random: the training forward draws random numbers, so PyTorch's
            results cannot be compared with the layer's.
    """

    key: str
    layer: str
    sizes: dict
    tiny: dict
    describe: str
    build: Callable
    input_shape: Callable
    torch_op: Callable
    target: str | None = None
    reference_bytes: Callable | None = field(default=None)
    random: bool = False

    def label(self, tiny=False):
        """The layer's name and its sizes, e.g. ``BatchNormalization B=256 N=1024``."""
        sizes = self.tiny if tiny else self.sizes
        return f"{self.layer} {self.describe.format(**sizes)}"

    def sizes_for(self, tiny=False):
        return self.tiny if tiny else self.sizes


def _matrix(sizes):
    return (sizes["B"], sizes["N"])


def _image(sizes):
    return (sizes["B"], sizes["C"], sizes["H"], sizes["W"])


def _elementwise(name):
    """A torch_op for a parameterless layer that is one function of torch."""

    def torch_op(torch, layer):
        return getattr(torch.nn.functional, name), []

    return torch_op


def _torch_batch_normalization(torch, layer):
    # Running statistics as the generated layer keeps them, so both do that work.
    running = {}

    def function(x):
        if not running:
            running["mean"] = torch.zeros(x.shape[1], dtype=x.dtype)
            running["var"] = torch.ones(x.shape[1], dtype=x.dtype)
        return torch.nn.functional.batch_norm(
            x,
            running["mean"],
            running["var"],
            training=True,
            momentum=1 - layer.alpha,
            eps=layer.EPS,
        )

    return function, []


def _torch_conv2d(torch, layer):
    def function(x, weight, bias):
        return torch.nn.functional.conv2d(
            x, weight, bias, padding=layer.kernel_size // 2
        )

    return function, [layer.W, layer.b]


def _torch_scaling(torch, layer):
    return (lambda x, gamma, beta: x * gamma + beta), [layer.gamma, layer.beta]


def _torch_dropout(torch, layer):
    # PyTorch draws its own mask, as the generated forward does; the backward of
    # both multiplies by the kept mask.
    def function(x):
        return torch.nn.functional.dropout(x, layer.p, training=True)

    return function, []


def _torch_linear(torch, layer):
    return torch.nn.functional.linear, [layer.W, layer.b]


def _torch_leaky_relu(torch, layer):
    return (lambda x: torch.nn.functional.leaky_relu(x, layer.slope)), []


def _torch_elu(torch, layer):
    return (lambda x: torch.nn.functional.elu(x, layer.alpha)), []


def _torch_layer_normalization(torch, layer):
    def function(x, gamma, beta):
        shape = (x.shape[1],)
        return torch.nn.functional.layer_norm(x, shape, gamma, beta, eps=layer.EPS)

    return function, [layer.gamma, layer.beta]


def _torch_max_pool2d(torch, layer):
    def function(x):
        return torch.nn.functional.max_pool2d(x, layer.kernel_size, layer.stride)

    return function, []


def _torch_row_function(name):
    def torch_op(torch, layer):
        return (lambda x: getattr(torch.nn.functional, name)(x, dim=1)), []

    return torch_op


def _torch_mse(torch, layer):
    def function(x, target):
        return torch.nn.functional.mse_loss(x, target, reduction="sum") / x.shape[0]

    return function, []


def _torch_class_nll(torch, layer):
    # The target arrives as one-hot rows; PyTorch takes the class indices.
    def function(x, target):
        return torch.nn.functional.nll_loss(x, target.argmax(dim=1))

    return function, []


def _reference_batch_normalization_bytes(sizes, itemsize):
    # The reference builds a B x B Jacobian per feature, and a product as large.
    return 3 * sizes["N"] * sizes["B"] ** 2 * itemsize


def _conv2d(key, sizes, tiny):
    return Case(
        key,
        "Conv2d",
        sizes,
        tiny,
        "B={B} {C}->{O} {H}x{W} K={K}",
        lambda package, s: package.Conv2d(s["C"], s["O"], s["K"], rng=0),
        _image,
        _torch_conv2d,
    )


def _activation(key, layer, torch_op):
    return Case(
        key,
        layer,
        {"B": 128, "N": 512},
        {"B": 4, "N": 8},
        "B={B} N={N}",
        lambda package, s: getattr(package, layer)(),
        _matrix,
        torch_op,
    )


def _criterion(key, layer, torch_op, target):
    return Case(
        key,
        layer,
        {"B": 128, "N": 10},
        {"B": 4, "N": 3},
        "B={B} N={N}",
        lambda package, s: getattr(package, layer)(),
        _matrix,
        torch_op,
        target=target,
    )


CASES = [
    # The sizes of the performance targets.
    Case(
        "batch_normalization_256x1024",
        "BatchNormalization",
        {"B": 256, "N": 1024},
        {"B": 8, "N": 16},
        "B={B} N={N}",
        lambda package, s: package.BatchNormalization(),
        _matrix,
        _torch_batch_normalization,
        reference_bytes=_reference_batch_normalization_bytes,
    ),
    Case(
        "batch_normalization_1024x4096",
        "BatchNormalization",
        {"B": 1024, "N": 4096},
        {"B": 16, "N": 32},
        "B={B} N={N}",
        lambda package, s: package.BatchNormalization(),
        _matrix,
        _torch_batch_normalization,
        reference_bytes=_reference_batch_normalization_bytes,
    ),
    _conv2d(
        "conv2d_k3",
        {"B": 16, "C": 32, "O": 64, "H": 32, "W": 32, "K": 3},
        {"B": 1, "C": 2, "O": 3, "H": 6, "W": 6, "K": 3},
    ),
    _conv2d(
        "conv2d_k5",
        {"B": 32, "C": 64, "O": 64, "H": 16, "W": 16, "K": 5},
        {"B": 1, "C": 2, "O": 2, "H": 6, "W": 6, "K": 5},
    ),
    # A small network's layers.
    _conv2d(
        "conv2d_small",
        {"B": 32, "C": 8, "O": 16, "H": 28, "W": 28, "K": 3},
        {"B": 1, "C": 1, "O": 2, "H": 5, "W": 5, "K": 3},
    ),
    Case(
        "max_pool2d",
        "MaxPool2d",
        {"B": 32, "C": 16, "H": 28, "W": 28, "K": 2},
        {"B": 1, "C": 2, "H": 4, "W": 4, "K": 2},
        "B={B} C={C} {H}x{W} K={K}",
        lambda package, s: package.MaxPool2d(s["K"]),
        _image,
        _torch_max_pool2d,
    ),
    Case(
        "flatten",
        "Flatten",
        {"B": 32, "C": 16, "H": 14, "W": 14},
        {"B": 2, "C": 2, "H": 3, "W": 3},
        "B={B} C={C} {H}x{W}",
        lambda package, s: package.Flatten(),
        _image,
        lambda torch, layer: ((lambda x: torch.flatten(x, 1)), []),
    ),
    Case(
        "linear",
        "Linear",
        {"B": 128, "N": 784, "O": 512},
        {"B": 4, "N": 6, "O": 5},
        "B={B} {N}->{O}",
        lambda package, s: package.Linear(s["N"], s["O"], rng=0),
        _matrix,
        _torch_linear,
    ),
    Case(
        "channelwise_scaling",
        "ChannelwiseScaling",
        {"B": 128, "N": 512},
        {"B": 4, "N": 8},
        "B={B} N={N}",
        lambda package, s: package.ChannelwiseScaling(s["N"], rng=0),
        _matrix,
        _torch_scaling,
    ),
    Case(
        "layer_normalization",
        "LayerNormalization",
        {"B": 128, "N": 512},
        {"B": 4, "N": 8},
        "B={B} N={N}",
        lambda package, s: package.LayerNormalization(s["N"]),
        _matrix,
        _torch_layer_normalization,
    ),
    Case(
        "dropout",
        "Dropout",
        {"B": 128, "N": 512},
        {"B": 4, "N": 8},
        "B={B} N={N} p=0.5",
        lambda package, s: package.Dropout(0.5, rng=0),
        _matrix,
        _torch_dropout,
        random=True,
    ),
    _activation("relu", "ReLU", _elementwise("relu")),
    _activation("leaky_relu", "LeakyReLU", _torch_leaky_relu),
    _activation("elu", "ELU", _torch_elu),
    _activation("softplus", "SoftPlus", _elementwise("softplus")),
    Case(
        "softmax",
        "SoftMax",
        {"B": 128, "N": 10},
        {"B": 4, "N": 3},
        "B={B} N={N}",
        lambda package, s: package.SoftMax(),
        _matrix,
        _torch_row_function("softmax"),
    ),
    Case(
        "log_softmax",
        "LogSoftMax",
        {"B": 128, "N": 10},
        {"B": 4, "N": 3},
        "B={B} N={N}",
        lambda package, s: package.LogSoftMax(),
        _matrix,
        _torch_row_function("log_softmax"),
    ),
    _criterion("mse_criterion", "MSECriterion", _torch_mse, "values"),
    _criterion("class_nll_criterion", "ClassNLLCriterion", _torch_class_nll, "classes"),
]
