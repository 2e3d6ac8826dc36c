"""The README's worked example (a layer written from scratch) runs as written."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_model_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- model-example -->\s*```bash\n(.*?)```\s*<!-- /model-example -->",
        readme,
        re.S,
    ).group(1)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "rms_norm.py").write_text(
        (ROOT / "examples" / "rms_norm.py").read_text()
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gradient check of RMSNormalization" in result.stdout
    assert "passed" in result.stdout
    assert (tmp_path / "my_layers" / "rms_norm.py").is_file()


def test_layer_class_compiles_a_model_in_memory():
    import numpy as np

    from codegen.load import layer_class
    from derivations.models import build
    from layers.gradcheck import check_gradients

    Linear = layer_class(build("linear"))
    layer = Linear(3, 2, rng=0)
    assert check_gradients(layer, np.random.default_rng(0).normal(size=(4, 3))).passed


def test_readme_derivation_example_prints_what_it_shows():
    readme = (ROOT / "README.md").read_text()
    section = re.search(
        r"<!-- derivation-example -->(.*?)<!-- /derivation-example -->", readme, re.S
    ).group(1)
    code, jacobian, adjoints = re.findall(r"```\w+\n(.*?)```", section, re.S)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    printed = result.stdout.splitlines()
    # The README wraps the Jacobian's one line before each " - ".
    assert printed[0] == jacobian.replace("\n  -", " -").strip()
    assert printed[1:] == adjoints.strip().splitlines()
