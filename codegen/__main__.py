"""``python -m codegen``: regenerate the layer modules from the models."""

import argparse
import sys

from codegen.generate import DEFAULT_OUT, generate, is_model_file
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
        help="layers to regenerate (default: all): model files (*.py defining "
        f"build()) or catalog names: {', '.join(CATALOG)}",
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
    unknown = [
        name for name in args.layers if name not in CATALOG and not is_model_file(name)
    ]
    if unknown:
        parser.error(
            f"unknown layer {unknown[0]!r}; expected a model file (*.py) or one of: "
            f"{', '.join(CATALOG)}"
        )
    files = [name for name in args.layers if is_model_file(name)]
    if files and args.out == str(DEFAULT_OUT):
        parser.error(
            f"a model file ({files[0]}) needs --out DIR: layers/generated holds the "
            "catalog only"
        )
    try:
        results = generate(args.layers, args.out, check=args.check)
    except (ValueError, NotImplementedError) as error:
        # A model written wrongly or a construct the engine cannot take: the
        # message names the model and the formula; a traceback would bury it.
        kind = "unsupported" if isinstance(error, NotImplementedError) else "error"
        print(f"python -m codegen: {kind}: {error}", file=sys.stderr)
        return 1
    stale = [result for result in results if result.stale]
    if args.check and stale:
        names = ", ".join(str(result.path) for result in stale)
        print(f"stale: {names}; run `python -m codegen` to rebuild", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
