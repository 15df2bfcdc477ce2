"""The `kerasbnn` command line: one function per subcommand.

```
kerasbnn convert model.keras model.tflite [--int8] [--no-verify] [--target arm] [--json]
kerasbnn summary model.keras [--json]
```

Exit status: 0 success, 2 bad usage, 3 input missing or unreadable, 4 output not writable,
5 the LCE converter failed, 6 the converted file failed the binarization audit or the
Keras-vs-LCE comparison.
"""

import argparse
import json
import os
import sys

EXIT_OK = 0
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_CONVERTER = 5
EXIT_VERIFY = 6


def _fail(command, message, status):
    print(f"kerasbnn {command}: error: {message}", file=sys.stderr)
    return status


def _load_model(command, path):
    """Returns `(model, None)` or `(None, exit status)` after printing why."""
    if not os.path.isfile(path):
        return None, _fail(command, f"input file {path!r} does not exist.", EXIT_INPUT)
    import keras

    import kerasbnn  # noqa: F401  (registers every kerasbnn class for safe_mode loading)

    try:
        return keras.saving.load_model(path), None
    except Exception as error:  # any loader failure means the input is unusable
        return None, _fail(
            command,
            f"could not load {path!r} as a Keras model ({type(error).__name__}: {error}).",
            EXIT_INPUT,
        )


def convert(args):
    """`kerasbnn convert IN.keras OUT.tflite`: `kerasbnn.lce_convert` with its report printed."""
    from kerasbnn import export

    try:
        export.check_writable(args.output)
    except (ValueError, PermissionError) as error:
        return _fail("convert", str(error), EXIT_OUTPUT)
    model, status = _load_model("convert", args.input)
    if model is None:
        return status
    try:
        report = export.lce_convert(
            model,
            args.output,
            int8=args.int8,
            target=args.target,
            verify=not args.no_verify,
            atol=args.atol,
        )
    except export.ConverterError as error:
        return _fail("convert", str(error), EXIT_CONVERTER)
    except (export.BinarizationError, export.VerificationError) as error:
        if error.report is not None:
            print(error.report)
        return _fail("convert", str(error), EXIT_VERIFY)
    except (ValueError, PermissionError) as error:
        return _fail("convert", str(error), EXIT_INPUT)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return EXIT_OK


def _add_convert(subparsers):
    parser = subparsers.add_parser(
        "convert",
        help="convert a .keras model to an LCE .tflite file, audit and verify it",
        description=convert.__doc__,
    )
    parser.add_argument("input", help="a model saved with model.save('model.keras')")
    parser.add_argument("output", help="the .tflite file to write (replaced only on success)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="int8 kernels: real int8 for models with FakeQuant ranges, "
        "else latency-only dummy ranges",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="write the file without raising on audit/outputs"
    )
    parser.add_argument(
        "--target", choices=("arm", "xcore"), default="arm", help="LCE converter target"
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=None,
        help="tolerance on max |Keras - LCE| "
        "(default 1e-3; models with FakeQuant: reported, not enforced)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=convert)


def summary(args):
    """`kerasbnn summary IN.keras`: the table of `kerasbnn.summary` (bits, memory, BOPs, FLOPs)."""
    model, status = _load_model("summary", args.input)
    if model is None:
        return status
    import kerasbnn

    try:
        totals = kerasbnn.summary(model, print_fn=None if args.json else print)
    except ValueError as error:
        return _fail("summary", str(error), EXIT_INPUT)
    if args.json:
        print(json.dumps(totals, indent=2, default=str))
    return EXIT_OK


def _add_summary(subparsers):
    parser = subparsers.add_parser(
        "summary",
        help="print bit widths, memory, BOPs and FLOPs of a .keras model",
        description=summary.__doc__,
    )
    parser.add_argument("input", help="a model saved with model.save('model.keras')")
    parser.add_argument(
        "--json", action="store_true", help="print the totals as JSON instead of the table"
    )
    parser.set_defaults(handler=summary)


def build_parser():
    """The argparse parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="kerasbnn", description="Binary networks for Keras 3.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_summary(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `kerasbnn` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
