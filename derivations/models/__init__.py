"""The layer models the library ships, one module per layer.

``CATALOG`` maps the generated module's name to ``module:function``, the
function that builds its model (``build`` when only the module is named).
"""

import importlib

CATALOG = {
    "batch_normalization": "derivations.models.batch_normalization",
    "channelwise_scaling": "derivations.models.channelwise_scaling",
    "dropout": "derivations.models.dropout",
    "conv2d": "derivations.models.conv2d",
    "linear": "derivations.models.linear",
    "relu": "derivations.models.activations:build_relu",
    "leaky_relu": "derivations.models.activations:build_leaky_relu",
    "elu": "derivations.models.activations:build_elu",
    "softplus": "derivations.models.activations:build_softplus",
    "layer_normalization": "derivations.models.layer_normalization",
    "mse_criterion": "derivations.models.criteria:build_mse",
    "class_nll_criterion": "derivations.models.criteria:build_class_nll",
    "flatten": "derivations.models.flatten",
    "softmax": "derivations.models.softmax:build_softmax",
    "log_softmax": "derivations.models.softmax:build_log_softmax",
    "max_pool2d": "derivations.models.max_pool2d",
}


def build(name):
    """The model of the layer module ``name`` (a key of ``CATALOG``)."""
    if name not in CATALOG:
        known = ", ".join(sorted(CATALOG))
        raise ValueError(f"unknown layer {name!r}; expected one of: {known}")
    module, _, function = CATALOG[name].partition(":")
    return getattr(importlib.import_module(module), function or "build")()
