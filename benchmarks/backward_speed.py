"""Forward and backward speed of the generated layers against reference and PyTorch.

Times every layer of ``layers.generated`` (see ``cases.py`` for the sizes),
the handwritten reference layer of the same name where there is one, and the
same op in PyTorch on the CPU when PyTorch is installed, in float32 and
float64, with NumPy's BLAS and PyTorch limited to one thread. Prints the
medians, their ratios (measured in the same run), the peak memory of each
backward beside its input's size, the dtypes that come out, how long
``python -m codegen`` and ``import layers.generated`` take, and the issue's
targets, each MET or MISSED.

A full run writes ``docs/benchmarks.md``, ``docs/benchmarks/results.json`` and
``docs/benchmarks/backward.png``; a ``--tiny`` run writes nothing unless given
``--out``. Benchmarks are not tests: only the ratios taken together mean
something, and the machine's load moves them.

    pip install -e ".[bench]"
    python benchmarks/backward_speed.py                  # a few minutes
    python benchmarks/backward_speed.py --tiny           # a smoke run, as CI does
    python benchmarks/backward_speed.py --cases conv2d_k3 --out /tmp/bench
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import publish
import report
from cases import CASES
from measure import codegen_seconds, import_seconds
from run_cases import TORCH_BACKWARD_METHOD, run_case

import layers.generated as generated
import layers.reference as reference

ROOT = Path(__file__).resolve().parents[1]
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _parse(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes, one call each (for CI)"
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="samples per median (default: 15)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder to write benchmarks.md and benchmarks/ into "
        "(default: docs/, and nothing with --tiny)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="KEY",
        choices=[case.key for case in CASES],
        help="only these cases (default: all): "
        + ", ".join(case.key for case in CASES),
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float32", "float64"], default=None
    )
    parser.add_argument(
        "--no-build", action="store_true", help="skip the codegen and import timings"
    )
    return parser.parse_args(argv)


def _thread_limits(tiny):
    """threadpoolctl's limit to one thread, or None when it is missing in --tiny."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if tiny:
            return None
        sys.exit(
            "threadpoolctl is needed to limit BLAS to one thread: "
            'pip install -e ".[bench]"'
        )
    return threadpool_limits(limits=1)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit():
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return completed.stdout.strip()


def _load():
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _meta(args, torch, repeats):
    blas, kernel, pools = "threadpoolctl not installed", "unknown", []
    try:
        from threadpoolctl import threadpool_info

        pools = threadpool_info()
    except ImportError:
        pass
    # NumPy and SciPy each bring their own BLAS; the folder says whose it is.
    described = []
    for pool in pools:
        if pool.get("user_api") == "blas":
            kernel = pool.get("architecture", "unknown")
            folder = Path(pool.get("filepath", "?")).parent.name
            described.append(
                f"{folder}: {pool['internal_api']} {pool['version']}, "
                f"{kernel} kernel, {pool['num_threads']} thread(s)"
            )
    if described:
        blas = "; ".join(described)
        kernel = ", ".join(
            dict.fromkeys(
                p.get("architecture", "unknown")
                for p in pools
                if p.get("user_api") == "blas"
            )
        )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "tiny": args.tiny,
        "repeats": 1 if args.tiny else repeats,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "load_before": _load(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch else "not installed",
        "torch_threads": torch.get_num_threads() if torch else None,
        "blas": blas,
        "blas_kernel": kernel,
        "thread_pools": pools,
        "openblas_env": {
            name: os.environ[name] for name in OPENBLAS_VARIABLES if name in os.environ
        },
        "torch_backward_method": TORCH_BACKWARD_METHOD,
        "commit": _commit(),
    }


def _progress(result):
    cells = [f"{result['label']} {result['dtype']}:"]
    for name in report.IMPLEMENTATIONS:
        entry = result.get(name) or {}
        if "backward" in entry:
            seconds = entry["backward"]["median_s"]
            cells.append(f"{report.NAMES[name]} {report.format_seconds_as_ms(seconds)}")
    return "  backward ms: ".join([cells[0], ", ".join(cells[1:])])


def _notes(results, failures):
    notes = []
    for result in results:
        entry = result.get("reference") or {}
        if "skipped" in entry and result["dtype"] == "float64":
            notes.append(f"{result['label']}: reference skipped, {entry['skipped']}.")
        if (result.get("torch") or {}).get("agrees") is False:
            notes.append(
                f"{result['label']} {result['dtype']}: the generated layer and "
                "PyTorch disagree (output or input gradient): not the same op."
            )
    for label in report.upcasting_layers(results):
        notes.append(f"float32 in, not float32 out: {label}.")
    covered = {case.layer for case in CASES}
    for name in generated.__all__:
        if name not in covered:
            notes.append(f"{name}: not benchmarked, no case in benchmarks/cases.py.")
    for failure in failures:
        notes.append(
            f"FAILED {failure['label']} {failure['dtype']}: {failure['error']}"
        )
    return notes


def _run_cases(args, torch):
    selected = [c for c in CASES if not args.cases or c.key in args.cases]
    selected = [c for c in selected if c.layer in generated.__all__]
    dtypes = args.dtypes or ["float32", "float64"]
    results, failures = [], []
    for case in selected:
        for dtype in dtypes:
            try:
                result = run_case(
                    case,
                    dtype,
                    generated=generated,
                    reference=reference,
                    torch=torch,
                    tiny=args.tiny,
                    repeats=args.repeats,
                )
            except Exception as error:
                traceback.print_exc()
                failures.append(
                    {
                        "label": case.label(args.tiny),
                        "dtype": dtype,
                        "error": repr(error),
                    }
                )
                print(f"FAILED {case.label(args.tiny)} {dtype}: {error!r}", flush=True)
                continue
            results.append(result)
            print(_progress(result), flush=True)
    return results, failures


def _build(args):
    if args.no_build:
        return {}
    repeats = 1 if args.tiny else 3
    # A --tiny run regenerates one small layer: enough to keep the timing working.
    layers = ("relu",) if args.tiny else ()
    return {
        "codegen": codegen_seconds(ROOT, repeats, layers),
        "import": import_seconds(ROOT, 1 if args.tiny else 5),
    }


def main(argv=None):
    args = _parse(argv)
    out = args.out if args.out or args.tiny else ROOT / "docs"
    if out is not None and not args.tiny and not publish.can_plot():
        sys.exit('matplotlib is needed for the plot: pip install -e ".[bench]"')
    torch = _torch()
    limits = _thread_limits(args.tiny)
    try:
        meta = _meta(args, torch, args.repeats)
        results, failures = _run_cases(args, torch)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    build = _build(args)
    meta["load_after"] = _load()

    data = {
        "meta": meta,
        "results": results,
        "failures": failures,
        "build": build,
        "notes": _notes(results, failures),
    }
    judged = report.evaluate_targets(results, build, args.tiny)
    data["targets"] = judged

    print()
    for line in publish.method_lines(meta):
        print(line)
    print()
    print("\n".join(report.timing_table(results)))
    for note in data["notes"]:
        print(f"- {note}")
    print()
    print("\n".join(report.memory_dtype_table(results)))
    print()
    print("\n".join(report.build_lines(build)))
    print()
    print("\n".join(report.targets_table(judged)))

    if out is None:
        print("\n--tiny: nothing written (give --out to write the results)")
    else:
        for path in publish.write_all(out, data, judged):
            print(f"wrote {path}")

    broken = failures or any("error" in entry for entry in build.values())
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
