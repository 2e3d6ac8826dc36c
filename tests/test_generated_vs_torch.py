"""Cross-checks of the generated layers against PyTorch's autograd, in float64.

The checks themselves live in ``tests.torch_oracle``, shared with the reference
layers: both packages must agree with the same oracle in the same way.
"""

import pytest

from layers import generated
from tests.torch_oracle import TorchCrossChecks

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the cross-check against it is skipped"
)


class TestGeneratedLayersAgainstTorch(TorchCrossChecks):
    layers = generated
