"""Cross-checks of the reference layers against PyTorch's autograd, in float64."""

import pytest

from layers import reference
from tests.torch_oracle import TorchCrossChecks

torch = pytest.importorskip(
    "torch", reason="PyTorch is an optional oracle for the reference layers"
)


class TestReferenceLayersAgainstTorch(TorchCrossChecks):
    layers = reference
