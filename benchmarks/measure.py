"""How the benchmark measures: medians of interleaved runs, peak memory, dtypes.

Implementations of one case (generated, PyTorch, reference) are timed in
rounds, one sample of each per round, so that a change in the machine's load
falls on all of them alike and their ratios stay fair. Each is called once
first as a warm-up; a fast call is repeated in a loop so that one sample lasts
at least ``MIN_SAMPLE_SECONDS``. A call slower than ``SLOW_SECONDS`` (the
reference layers at full size) is its own warm-up and gets fewer samples, so
that it costs about ``SLOW_BUDGET_SECONDS``.
"""

import math
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

MIN_SAMPLE_SECONDS = 0.005
SLOW_SECONDS = 1.0
SLOW_BUDGET_SECONDS = 10.0


def _clock(function, loops):
    started = time.perf_counter()
    for _ in range(loops):
        function()
    return (time.perf_counter() - started) / loops


def interleaved_medians(functions, tiny=False):
    """Median seconds per call of each function, sampled in interleaved rounds.

    Args:
        functions: name -> (function, samples wanted).
        tiny: one call each, no warm-up: a smoke run.

    Returns:
        name -> {"median_s", "samples_s", "loops"}.
    """
    plans = {}
    for name, (function, wanted) in functions.items():
        if tiny:
            plans[name] = {"function": function, "wanted": 1, "loops": 1, "samples": []}
            continue
        warm = _clock(function, 1)
        plan = {"function": function, "wanted": wanted, "loops": 1, "samples": []}
        if warm >= SLOW_SECONDS:
            plan["samples"].append(warm)
            plan["wanted"] = min(wanted, max(1, int(SLOW_BUDGET_SECONDS / warm)))
        else:
            plan["loops"] = max(1, min(1000, math.ceil(MIN_SAMPLE_SECONDS / warm)))
        plans[name] = plan

    while any(len(plan["samples"]) < plan["wanted"] for plan in plans.values()):
        for plan in plans.values():
            if len(plan["samples"]) < plan["wanted"]:
                plan["samples"].append(_clock(plan["function"], plan["loops"]))

    return {
        name: {
            "median_s": statistics.median(plan["samples"]),
            "samples_s": plan["samples"],
            "loops": plan["loops"],
        }
        for name, plan in plans.items()
    }


def peak_bytes(function):
    """The peak memory, in bytes, that one call of ``function`` allocates.

    NumPy reports its array buffers to tracemalloc, so this counts every
    temporary array the call makes and the arrays it returns; memory allocated
    before the call is not counted.
    """
    tracemalloc.start()
    try:
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def _median_subprocess_seconds(command, repeats, cwd):
    """Median wall time of ``command``; raises CalledProcessError when it fails."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def codegen_seconds(root, repeats, layers=()):
    """Wall time of ``python -m codegen`` writing into a temporary folder.

    The committed ``layers/generated`` is never touched. Returns a dict with
    ``median_s`` and ``samples_s``, or with ``error`` when the command failed.
    """
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "codegen", *layers, "--out", folder]
        try:
            median, samples = _median_subprocess_seconds(command, repeats, root)
        except subprocess.CalledProcessError as error:
            return {"command": "python -m codegen", "error": error.stderr[-2000:]}
    label = " ".join(["python -m codegen", *layers])
    return {"command": label, "median_s": median, "samples_s": samples}


_IMPORT_PROBE = """
import json, sys, time
started = time.perf_counter()
import numpy
numpy_done = time.perf_counter()
import layers.generated
done = time.perf_counter()
print(json.dumps({
    "total_s": done - started,
    "numpy_s": numpy_done - started,
    "sympy_imported": "sympy" in sys.modules,
}))
"""


def import_seconds(root, repeats):
    """Time to import layers.generated in a fresh interpreter, NumPy included.

    Returns a dict with the median total, the median share of NumPy's own
    import, and whether SymPy was imported on the way (it must not be).
    """
    import json

    runs = []
    for _ in range(repeats):
        completed = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            return {"error": completed.stderr[-2000:]}
        runs.append(json.loads(completed.stdout))
    return {
        "median_s": statistics.median(run["total_s"] for run in runs),
        "numpy_median_s": statistics.median(run["numpy_s"] for run in runs),
        "samples_s": [run["total_s"] for run in runs],
        "sympy_imported": any(run["sympy_imported"] for run in runs),
    }
