"""The layer models the library ships, one module per layer.

Each module defines ``build() -> Model``. ``CATALOG`` maps the generated module's
name to the model's module.
"""

import importlib

CATALOG = {
    "batch_normalization": "derivations.models.batch_normalization",
    "channelwise_scaling": "derivations.models.channelwise_scaling",
    "dropout": "derivations.models.dropout",
    "conv2d": "derivations.models.conv2d",
}


def build(name):
    """The model of the layer module ``name`` (a key of ``CATALOG``)."""
    if name not in CATALOG:
        known = ", ".join(sorted(CATALOG))
        raise ValueError(f"unknown layer {name!r}; expected one of: {known}")
    return importlib.import_module(CATALOG[name]).build()
