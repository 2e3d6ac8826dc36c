"""``python -m codegen``: regenerate the layer modules from the models."""

import argparse
import sys

from codegen.generate import DEFAULT_OUT, generate
from derivations.models import CATALOG


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codegen",
        description="Derive the backward passes of the layer models and write "
        "their NumPy modules.",
    )
    parser.add_argument(
        "layers",
        nargs="*",
        metavar="LAYER",
        help=f"layers to regenerate (default: all): {', '.join(CATALOG)}",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name the files that differ from the models",
    )
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="folder to write to (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.layers if name not in CATALOG]
    if unknown:
        parser.error(
            f"unknown layer {unknown[0]!r}; expected one of: {', '.join(CATALOG)}"
        )
    results = generate(args.layers, args.out, check=args.check)
    stale = [result for result in results if result.stale]
    if args.check and stale:
        names = ", ".join(str(result.path) for result in stale)
        print(f"stale: {names}; run `python -m codegen` to rebuild", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
