"""What the benchmark shows: tables, the issue's targets, the page and the plot.

Everything here reads the results dict that ``backward_speed.py`` builds (the
same dict it writes as JSON), so the printed table, the markdown page and the
plot cannot disagree.
"""

from dataclasses import dataclass

IMPLEMENTATIONS = ("generated", "torch", "reference")
NAMES = {"generated": "generated", "torch": "PyTorch", "reference": "reference"}


@dataclass(frozen=True)
class Target:
    """One performance target of the issue.

    ``kind`` is ``"speedup"`` (reference ÷ generated backward, at least
    ``limit``), ``"torch_ratio"`` (generated ÷ PyTorch backward, at most
    ``limit``), ``"memory"`` (the input-sized arrays the backward allocates at
    its peak, at most ``limit``, over every case of ``layer``) or ``"seconds"``
    (a build time, at most ``limit``).
    """

    text: str
    kind: str
    limit: float
    case: str = ""
    dtype: str = ""
    layer: str = ""


TARGETS = [
    Target(
        "BatchNormalization backward f64 B=256 N=1024: >= 40x faster than reference",
        "speedup",
        40,
        "batch_normalization_256x1024",
        "float64",
    ),
    Target(
        "BatchNormalization backward f64 B=256 N=1024: <= 3x PyTorch",
        "torch_ratio",
        3,
        "batch_normalization_256x1024",
        "float64",
    ),
    Target(
        "BatchNormalization backward f32 B=1024 N=4096: <= 1.5x PyTorch",
        "torch_ratio",
        1.5,
        "batch_normalization_1024x4096",
        "float32",
    ),
    Target(
        "BatchNormalization backward f64 B=1024 N=4096: <= 1.5x PyTorch",
        "torch_ratio",
        1.5,
        "batch_normalization_1024x4096",
        "float64",
    ),
    Target(
        "Conv2d backward f64 B=16 32->64 32x32 K=3: >= 100x faster than reference",
        "speedup",
        100,
        "conv2d_k3",
        "float64",
    ),
    Target(
        "Conv2d backward f64 B=16 32->64 32x32 K=3: <= 1.2x PyTorch",
        "torch_ratio",
        1.2,
        "conv2d_k3",
        "float64",
    ),
    Target(
        "Conv2d backward f32 B=16 32->64 32x32 K=3: <= 2x PyTorch",
        "torch_ratio",
        2,
        "conv2d_k3",
        "float32",
    ),
    Target(
        "BatchNormalization backward allocates <= 4 input-sized arrays (worst case)",
        "memory",
        4,
        layer="BatchNormalization",
    ),
    Target("python -m codegen: < 10 s", "seconds", 10, case="codegen"),
    Target(
        "import layers.generated (fresh process): < 0.3 s", "seconds", 0.3, "import"
    ),
]


def _backward(result, implementation):
    entry = result.get(implementation) or {}
    return entry.get("backward", {}).get("median_s")


def speedup(result):
    """Reference backward time ÷ generated backward time, or None."""
    reference, generated = (
        _backward(result, "reference"),
        _backward(result, "generated"),
    )
    return reference / generated if reference and generated else None


def torch_ratio(result):
    """Generated backward time ÷ PyTorch backward time, or None."""
    generated, torch = _backward(result, "generated"), _backward(result, "torch")
    return generated / torch if generated and torch else None


def memory_ratio(result, implementation="generated"):
    """The backward's peak allocation in multiples of the input's size, or None."""
    peak = (result.get(implementation) or {}).get("backward_peak_bytes")
    return peak / result["input_bytes"] if peak is not None else None


def input_arrays(result):
    """How many input-sized arrays the generated backward allocates, or None."""
    return (result.get("generated") or {}).get("backward_input_arrays")


def evaluate_targets(results, build, tiny):
    """Each target with its measured number and MET, MISSED or why not judged."""
    by_key = {(r["case"], r["dtype"]): r for r in results}
    judged = []
    for target in TARGETS:
        measured, where = None, ""
        if target.kind == "seconds":
            measured = build.get(target.case, {}).get("median_s")
        elif target.kind == "memory":
            ratios = [
                (input_arrays(r), f"{r['label']} {r['dtype']}")
                for r in results
                if r["layer"] == target.layer and input_arrays(r) is not None
            ]
            if ratios:
                measured, where = max(ratios)
        else:
            result = by_key.get((target.case, target.dtype))
            if result is not None:
                measure = speedup if target.kind == "speedup" else torch_ratio
                measured = measure(result)

        if measured is None:
            status = "NOT MEASURED"
        elif tiny:
            status = "not judged (--tiny)"
        elif target.kind == "speedup":
            status = "MET" if measured >= target.limit else "MISSED"
        else:
            status = "MET" if measured <= target.limit else "MISSED"
        judged.append(
            {
                "target": target.text,
                "kind": target.kind,
                "limit": target.limit,
                "measured": measured,
                "where": where,
                "status": status,
            }
        )
    return judged


def format_seconds_as_ms(seconds):
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 0.1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def format_ratio(ratio):
    if ratio is None:
        return "–"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def format_bytes(count):
    if count is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def format_measured(target):
    measured = target["measured"]
    if measured is None:
        return "–"
    if target["kind"] == "seconds":
        return f"{measured:.2f} s"
    if target["kind"] == "memory":
        return f"{measured:.2f} input-sized arrays ({target['where']})"
    return format_ratio(measured)


def markdown_table(headers, rows, right=()):
    """A markdown table padded to line up in a terminal too.

    ``right`` holds the indices of the columns aligned to the right (numbers).
    """
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(headers, *rows, strict=True)
    ]

    def line(cells):
        padded = [
            str(cell).rjust(width) if index in right else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (width - 1) + ":" if index in right else "-" * width
        for index, width in enumerate(widths)
    ]
    return [line(headers), line(rule)] + [line(row) for row in rows]


def timing_table(results):
    """Medians in milliseconds, forward and backward, and the backward ratios."""
    headers = ["layer", "dtype"]
    headers += [f"fwd {NAMES[name]}" for name in IMPLEMENTATIONS]
    headers += [f"bwd {NAMES[name]}" for name in IMPLEMENTATIONS]
    headers += ["bwd generated ÷ PyTorch", "bwd reference ÷ generated"]
    rows = []
    for result in results:
        row = [result["label"], result["dtype"]]
        for step in ("forward", "backward"):
            for name in IMPLEMENTATIONS:
                entry = result.get(name) or {}
                cell = format_seconds_as_ms(entry.get(step, {}).get("median_s"))
                if "skipped" in entry:
                    cell = "skipped"
                elif name == "torch" and entry.get("agrees") is False:
                    cell += " (differs)"
                row.append(cell)
        row += [format_ratio(torch_ratio(result)), format_ratio(speedup(result))]
        rows.append(row)
    return markdown_table(headers, rows, right=range(2, len(headers)))


def memory_dtype_table(results):
    """Peak backward allocation beside the input's size, and the dtypes out."""
    headers = [
        "layer",
        "dtype",
        "input",
        "bwd peak, generated",
        "input-sized arrays",
        "bwd peak, reference",
        "output",
        "input_grad",
        "parameter grads",
        "dtype check",
    ]
    rows = []
    for result in results:
        peaks = []
        for name in ("generated", "reference"):
            ratio = memory_ratio(result, name)
            peak = (result.get(name) or {}).get("backward_peak_bytes")
            peaks.append(
                "–" if ratio is None else f"{ratio:.1f}x ({format_bytes(peak)})"
            )
        arrays = input_arrays(result)
        peaks.insert(1, "–" if arrays is None else f"{arrays:.2f}")
        dtypes = result["dtypes"]
        outputs = [dtypes["output"], dtypes["input_grad"]]
        check = "ok"
        if any(d not in (result["dtype"], "float") for d in outputs):
            check = "UPCASTS"
        elif dtypes.get("wide_inside"):
            check = "float64 inside: " + ", ".join(dtypes["wide_inside"])
        rows.append(
            [result["label"], result["dtype"], format_bytes(result["input_bytes"])]
            + peaks
            + outputs
            + [", ".join(dtypes["parameter_grads"]) or "–", check]
        )
    return markdown_table(headers, rows, right=(2, 3, 4, 5))


def upcasting_layers(results):
    """Labels of the float32 runs that return anything but float32."""
    return [
        f"{r['label']} ({r['dtypes']['output']} output, "
        f"{r['dtypes']['input_grad']} input_grad)"
        for r in results
        if r["dtype"] == "float32"
        and any(
            d not in ("float32", "float")
            for d in (r["dtypes"]["output"], r["dtypes"]["input_grad"])
        )
    ]


def targets_table(judged):
    rows = [[t["status"], t["target"], format_measured(t)] for t in judged]
    return markdown_table(["status", "target", "measured"], rows)


def build_lines(build):
    lines = []
    codegen = build.get("codegen", {})
    if "error" in codegen:
        lines.append(f"- `{codegen['command']}` failed: {codegen['error'].strip()}")
    elif codegen:
        lines.append(
            f"- `{codegen['command']}` (into a temporary folder, whole command): "
            f"{codegen['median_s']:.2f} s, median of {len(codegen['samples_s'])}"
        )
    imported = build.get("import", {})
    if "error" in imported:
        lines.append(f"- `import layers.generated` failed: {imported['error'].strip()}")
    elif imported:
        sympy = "imports SymPy" if imported["sympy_imported"] else "no SymPy"
        lines.append(
            f"- `import layers.generated` in a fresh interpreter: "
            f"{imported['median_s']:.3f} s, of which NumPy "
            f"{imported['numpy_median_s']:.3f} s ({sympy}), "
            f"median of {len(imported['samples_s'])}"
        )
    return lines
