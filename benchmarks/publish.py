"""Writes the benchmark's results for the docs site: JSON, a plot and a page.

The layout under the output folder (``docs/`` by default) is the docs site's:
``benchmarks.md`` and, beside it, ``benchmarks/results.json`` and
``benchmarks/backward.png``, which the page links to.
"""

import json
import math
from pathlib import Path

import report

PAGE = "benchmarks.md"
FOLDER = "benchmarks"
RESULTS = "results.json"
PLOT = "backward.png"
COMMAND = "python benchmarks/backward_speed.py"


def can_plot():
    """Whether matplotlib is installed (the ``bench`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_all(out, data, judged):
    """Writes the JSON, the plot (when it can) and the page; returns their paths."""
    folder = Path(out) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / RESULTS, Path(out) / PAGE]
    paths[0].write_text(json.dumps(data, indent=1) + "\n")
    paths[1].write_text(page(data, judged))
    if can_plot():
        paths.append(folder / PLOT)
        write_plot(paths[-1], data)
    return paths


def write_plot(path, data):
    """Backward times: generated ÷ PyTorch per dtype, and float64 in milliseconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    results = data["results"]
    labels = list(dict.fromkeys(r["label"] for r in results))
    by_label = {(r["label"], r["dtype"]): r for r in results}
    rows = range(len(labels))
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 0.4 * len(labels) + 2.0), sharey=True
    )

    for offset, dtype in ((-0.2, "float32"), (0.2, "float64")):
        ratios = [
            report.torch_ratio(by_label.get((label, dtype), {})) for label in labels
        ]
        values = [math.nan if ratio is None else ratio for ratio in ratios]
        left.barh([row + offset for row in rows], values, height=0.4, label=dtype)
    left.axvline(1.0, color="black", linewidth=0.8)
    left.set_xscale("log")
    _label_log_axis(left, ticker, "x")
    left.set_xlabel("backward time, generated ÷ PyTorch (below 1x: faster)")
    left.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)

    for offset, name in ((-0.27, "generated"), (0.0, "torch"), (0.27, "reference")):
        values = []
        for label in labels:
            entry = by_label.get((label, "float64"), {}).get(name) or {}
            seconds = entry.get("backward", {}).get("median_s")
            values.append(math.nan if seconds is None else seconds * 1e3)
        right.barh(
            [row + offset for row in rows],
            values,
            height=0.27,
            label=report.NAMES[name],
        )
    right.set_xscale("log")
    _label_log_axis(right, ticker, "")
    right.set_xlabel("backward time, float64, ms (log scale)")
    right.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)

    left.set_yticks(list(rows), labels)
    left.invert_yaxis()
    meta = data["meta"]
    figure.suptitle(
        f"Backward passes, one thread, medians: {meta['cpu']} "
        f"({meta['blas_kernel']} BLAS kernel)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _label_log_axis(axes, ticker, suffix):
    """Ticks at powers of ten (and 2 and 5 times them over a short range)."""
    low, high = axes.get_xlim()
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 3 else (1.0,)
    axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axes.xaxis.set_major_formatter(
        ticker.FuncFormatter(lambda value, _: f"{value:g}{suffix}")
    )
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def method_lines(meta):
    """How the numbers were measured, one bullet each."""
    env = ", ".join(f"{name}={value}" for name, value in meta["openblas_env"].items())
    return [
        f"- Machine: {meta['cpu']}, {meta['cores']} cores; load average "
        f"{meta['load_before']} before the run, {meta['load_after']} after. "
        f"Python {meta['python']}, NumPy {meta['numpy']}, PyTorch {meta['torch']}.",
        f"- One thread: BLAS limited with threadpoolctl "
        f"({meta['blas']}), PyTorch with `torch.set_num_threads(1)`. "
        f"OpenBLAS environment: {env or 'none set'}.",
        f"- Medians of {meta['repeats']} interleaved samples after a warm-up "
        "(a sample of a fast call loops it for at least 5 ms); the reference "
        "layers get fewer samples, and one call over 1 s is its own warm-up and "
        "they stop after about 10 s. Ratios are taken within the same run.",
        "- Backward of a NumPy layer: `layer.backward(input, output_grad)` after "
        "one forward on the same input, all gradients (input and parameters).",
        f"- Backward of PyTorch: {meta['torch_backward_method']}.",
        "- Float32 runs feed float32 inputs; the NumPy layers keep the parameters "
        "they are built with, PyTorch gets them cast to float32.",
        "- Peak memory of one backward: tracemalloc, which sees NumPy's arrays, "
        "including the gradients it returns; PyTorch's allocations are not seen.",
        f"- Generated code as of commit {meta['commit']}.",
    ]


def page(data, judged):
    """The markdown page: method, targets, times, plot, memory and dtypes."""
    meta = data["meta"]
    lines = [
        f"<!-- Generated by `{COMMAND}`; do not edit by hand: rerun the command. -->",
        "",
        "# Benchmarks",
        "",
        "The generated layers against the course's handwritten reference layers "
        "(`layers.reference`) and PyTorch's CPU kernels, forward and backward, in "
        "float32 and float64, on one thread. Rerun it with:",
        "",
        "```bash",
        f'pip install -e ".[bench]" && {COMMAND}',
        "```",
        "",
        f"Measured on {meta['date']}. The numbers are also in "
        f"[results.json]({FOLDER}/{RESULTS}).",
        "",
        "## Method",
        "",
        *method_lines(meta),
        "",
        "## Targets",
        "",
        *report.targets_table(judged),
        "",
        "## Times",
        "",
        "Medians in milliseconds; `–` where a layer has no reference.",
        "",
        *report.timing_table(data["results"]),
        "",
        *[f"- {note}" for note in data["notes"]],
        "",
        f"![Backward times against PyTorch and the reference]({FOLDER}/{PLOT})",
        "",
        "## Memory and dtypes",
        "",
        "Peak allocation of one backward in multiples of the input's size "
        "(what it returns included). Input-sized arrays: the peak on the batch "
        "repeated twice minus the peak on the batch, over the input's size, so "
        "that per-feature vectors and parameter gradients drop out. "
        "Parameters are float64 unless built otherwise, so their gradients are "
        "too. `float64 inside`: a float32 run whose forward or backward holds "
        "an input-sized float64 intermediate (promoted by a float64 parameter "
        "or constant, then cast back at the end), found by tracing every line "
        "of the generated passes (`layers.dtypes.wide_intermediates`).",
        "",
        *report.memory_dtype_table(data["results"]),
        "",
        "## Build",
        "",
        *report.build_lines(data["build"]),
        "",
    ]
    return "\n".join(line for line in lines if line is not None)
