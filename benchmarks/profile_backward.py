"""Where a generated backward spends its time, statement by statement.

Runs the statements of a generated layer's ``_backward_<mode>`` method one at a
time on a benchmark case's input, times each (median over the repeats), and
prints them in order with their share of the total. A branch is followed into
the arm that runs, and ``return self._backward_...(...)`` into the method it
calls, so that the statements shown are the ones that do the work.

    python benchmarks/profile_backward.py conv2d_k3 float64
    python benchmarks/profile_backward.py batch_normalization_1024x4096 float32
"""

import argparse
import ast
import inspect
import statistics
import sys
import textwrap
import time

import numpy as np
from cases import CASES
from run_cases import _inputs

import layers.generated as generated


def _method_statements(layer, name):
    method = getattr(type(layer), name, None)
    if method is None:
        raise SystemExit(f"{type(layer).__name__} has no method {name}")
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    function = tree.body[0]
    parameters = [argument.arg for argument in function.args.args]
    return parameters, function.body


def _callee(statement):
    """The method name in ``return self._backward_...(...)``, or None."""
    value = statement.value
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and isinstance(value.func.value, ast.Name)
        and value.func.value.id == "self"
        and value.func.attr.startswith("_backward")
    ):
        return value.func.attr
    return None


class StatementTimer:
    """Runs statements in one namespace and adds up the time of each line."""

    def __init__(self, layer):
        self.layer = layer
        self.namespace = {}
        self.times = {}
        self.order = []

    def run(self, statements, source_name):
        """Runs ``statements``; returns True when one of them returned."""
        for statement in statements:
            if isinstance(statement, ast.Expr) and isinstance(
                statement.value, ast.Constant
            ):
                continue
            if isinstance(statement, ast.If):
                test = eval(
                    compile(ast.Expression(statement.test), source_name, "eval"),
                    self.namespace,
                )
                arm = statement.body if test else statement.orelse
                if self.run(arm, source_name):
                    return True
                continue
            if isinstance(statement, ast.Return) and _callee(statement):
                name = _callee(statement)
                parameters, body = _method_statements(self.layer, name)
                arguments = [
                    eval(
                        compile(ast.Expression(a), source_name, "eval"), self.namespace
                    )
                    for a in statement.value.args
                ]
                self.namespace.update(zip(parameters[1:], arguments, strict=True))
                return self.run(body, name)
            if isinstance(statement, ast.Return):
                statement = ast.Assign(
                    [ast.Name("__result__", ast.Store())], statement.value, lineno=0
                )
            self._time(statement, source_name)
            if isinstance(statement, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__result__"
                for t in statement.targets
            ):
                return True
        return False

    def _time(self, statement, source_name):
        key = (source_name, ast.unparse(statement))
        code = compile(
            ast.fix_missing_locations(ast.Module([statement], [])), source_name, "exec"
        )
        started = time.perf_counter()
        exec(code, self.namespace)
        elapsed = time.perf_counter() - started
        if key not in self.times:
            self.times[key] = []
            self.order.append(key)
        self.times[key].append(elapsed)


def profile(case, dtype, repeats, mode="train"):
    """Per-statement medians of the generated backward of ``case`` in ``dtype``."""
    sizes = case.sizes
    x, target = _inputs(case, sizes, np.dtype(dtype))
    layer = case.build(generated, sizes)
    output = layer.forward(x) if target is None else layer.forward(x, target)
    rng = np.random.default_rng(1)
    output_grad = (
        rng.standard_normal(np.shape(output)).astype(dtype) if target is None else 1.0
    )
    method = f"_backward_{mode}"
    parameters, body = _method_statements(layer, method)
    module = sys.modules[type(layer).__module__]
    arguments = [x, output_grad] if target is None else [x, target, output_grad]

    timer, wholes = StatementTimer(layer), []
    for count in range(repeats + 1):
        timer.namespace = dict(vars(module))
        timer.namespace.update(zip(parameters, [layer, *arguments], strict=True))
        timer.run(body, method)
        # The statements one by one, then the whole call, in the same round.
        started = time.perf_counter()
        layer.backward(x, output_grad if target is None else target)
        wholes.append(time.perf_counter() - started)
        if count == 0:
            # The first round is a warm-up: forget its times.
            timer.times, wholes = {key: [] for key in timer.order}, []

    medians = [(key, statistics.median(timer.times[key])) for key in timer.order]
    return medians, statistics.median(wholes)


def main(argv=None):
    keys = [case.key for case in CASES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=keys, metavar="CASE", help=", ".join(keys))
    parser.add_argument("dtype", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    case = next(case for case in CASES if case.key == args.case)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    limits = threadpool_limits(limits=1) if threadpool_limits else None
    try:
        medians, whole = profile(case, args.dtype, args.repeats)
    finally:
        if limits is not None:
            limits.restore_original_limits()

    total = sum(seconds for _, seconds in medians)
    print(f"{case.label()} {args.dtype}: generated backward, one thread")
    print(
        f"statements add up to {total * 1e3:.2f} ms; "
        f"layer.backward takes {whole * 1e3:.2f} ms"
    )
    for (method, source), seconds in medians:
        if seconds < 0.005 * total:
            continue
        line = source.replace("\n", " ")
        line = line if len(line) <= 110 else line[:107] + "..."
        print(f"{seconds * 1e3:9.2f} ms {seconds / total:5.0%}  {method}: {line}")
    print("(statements under 0.5% of the total are left out)")


if __name__ == "__main__":
    main()
