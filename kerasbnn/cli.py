"""The `kerasbnn` command line: one function per subcommand.

```
kerasbnn convert model.keras model.tflite [--int8] [--no-verify] [--target arm] [--json]
kerasbnn summary model.keras [--json]
kerasbnn import-larq larq_model.h5|SavedModel_folder model.keras [--allow-float]
kerasbnn binarize float.keras binary.keras [--bits 1] [--quantizer dorefa] [--binary plain]
    [--dry-run]
kerasbnn train --config run.yaml --bits 2 [--set section.key=value ...] [--resume]
kerasbnn distill --config run.yaml --method none|kd|at|mad|average|cmtkd|progressive|pkkd [--set ...] [--resume]
kerasbnn pipeline --config run.yaml [--set ...] [--resume]
    (train, distill and pipeline take --defaults instead of --config for a run with every
    default value, and --distribute none|mirrored|multiworker)
kerasbnn benchmark model.tflite [--threads 1] [--runs 20] [--xnnpack]
```

Exit status: 0 success; 2 bad usage (an unknown option, a number out of its range such as
`--runs 0` or `--atol -1`, no `--config` and no `--defaults`); 3 input missing, unreadable or
corrupt (model, .tflite, dataset files: also images of the wrong shape, labels outside the
class range, a failed gzip checksum, fewer images than the config asks for); 4 output not
writable (including the run directory); 5 the LCE converter failed, or LCE's interpreter
cannot run the converted file; 6 the converted file failed the binarization audit or the
Keras-vs-LCE comparison; 7 a bad config (unknown, renamed or repeated key, wrong type, empty
string, value out of range, empty or malformed file, bad TF_CONFIG, a `--resume` that would
invalidate finished steps, ...); 8 training stopped on a non-finite or diverging loss; 130 interrupted (Ctrl-C). Every error
is one line on stderr that names the problem and the fix; training commands check the whole
config, the run directory and the data before anything is written. A training command that
stops on a write error (full disk, a folder made read-only), a training failure or Ctrl-C
keeps every finished step and the last finished epoch: the same command with `--resume`
continues. Arguments are parsed, and `--help` and usage errors answered, before TensorFlow
loads.
"""

import argparse
import json
import os
import sys

from kerasbnn import cli_support
from kerasbnn import config as run_config
from kerasbnn import presets

EXIT_OK = 0
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_CONVERTER = 5
EXIT_VERIFY = 6
EXIT_CONFIG = 7
EXIT_TRAINING = 8
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _fail(command, message, status):
    print(f"kerasbnn {command}: error: {message}", file=sys.stderr)
    return status


def _load_model(command, path):
    """Returns `(model, None)` or `(None, exit status)` after printing why."""
    if not os.path.isfile(path):
        return None, _fail(command, f"input file {path!r} does not exist.", EXIT_INPUT)
    import keras

    import kerasbnn

    kerasbnn.register_all()  # every kerasbnn class, for safe_mode loading

    if path.endswith(".keras") and not cli_support.complete_zip(path):
        return None, _fail(
            command,
            f"could not load {path!r} as a Keras model: the file is corrupt or truncated (a "
            ".keras file is a zip archive, and this one is incomplete); save the model again "
            "with model.save().",
            EXIT_INPUT,
        )
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
        type=cli_support.non_negative_float,
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


def import_larq(args):
    """`kerasbnn import-larq IN OUT.keras`: a larq .h5 file or SavedModel as a kerasbnn model.

    larq is read in a child process under the legacy Keras 2; the layers, quantizers,
    constraints and weights are rebuilt with kerasbnn / Keras 3 and saved as OUT.keras.
    """
    from kerasbnn import larq_import

    try:
        output = larq_import.check_output(args.output)
    except larq_import.LarqImportError as error:
        return _fail("import-larq", str(error), EXIT_OUTPUT)
    try:
        model = larq_import.from_larq(args.input, allow_float=args.allow_float)
    except larq_import.LarqImportError as error:
        return _fail("import-larq", str(error), EXIT_INPUT)
    try:
        model.save(output)
    except OSError as error:
        return _fail("import-larq", f"could not write {output} ({error}).", EXIT_OUTPUT)
    print(f"{output}: {model.name}, {len(model.layers)} layers imported from {args.input}")
    return EXIT_OK


def _add_import_larq(subparsers):
    parser = subparsers.add_parser(
        "import-larq",
        help="rebuild a larq (tf.keras 2) model as a kerasbnn Keras 3 .keras file",
        description=import_larq.__doc__,
    )
    parser.add_argument("input", help="a larq model saved with model.save: .h5 or SavedModel")
    parser.add_argument("output", help="the .keras file to write")
    parser.add_argument(
        "--allow-float", action="store_true", help="import a model that has no larq layer"
    )
    parser.set_defaults(handler=import_larq)


def binarize(args):
    """`kerasbnn binarize IN.keras OUT.keras`: the binary (or k-bit) twin of a float model.

    Prints the plan of `kerasbnn.binarize` (every layer: converted, kept float and why,
    rewritten; parameters, memory and BOPs before and after), then writes OUT.keras, the
    float weights as latent weights. With --dry-run only the plan is printed.
    """
    from kerasbnn.models.precision import resolve_precision

    try:
        if resolve_precision(args.bits, args.quantizer, args.binary).is_float:
            raise ValueError("--bits 32 is the float model itself; pass 1, 2, 4 or 8.")
    except ValueError as error:
        return _fail("binarize", str(error), 2)
    if not args.dry_run:
        from kerasbnn import export

        if args.output is None or not str(args.output).endswith(".keras"):
            return _fail("binarize", f"the output {args.output!r} must be a .keras file "
                         "(or pass --dry-run to print the plan only).", EXIT_OUTPUT)
        try:
            export.check_writable(args.output)
        except (ValueError, PermissionError) as error:
            return _fail("binarize", str(error), EXIT_OUTPUT)
    model, status = _load_model("binarize", args.input)
    if model is None:
        return status
    import kerasbnn

    options = dict(bits=args.bits, quantizer=args.quantizer, binary=args.binary)
    try:
        print(kerasbnn.binarize(model, dry_run=True, **options))
        if args.dry_run:
            return EXIT_OK
        binary = kerasbnn.binarize(model, **options)
    except ValueError as error:
        return _fail("binarize", str(error), EXIT_INPUT)
    try:
        binary.save(args.output)
    except OSError as error:
        return _fail("binarize", f"could not write {args.output} ({error}).", EXIT_OUTPUT)
    print(f"{args.output}: {binary.name} written")
    return EXIT_OK


def _add_binarize(subparsers):
    parser = subparsers.add_parser(
        "binarize", help="make the binary (or k-bit) twin of a float .keras model",
        description=binarize.__doc__,
    )
    parser.add_argument("input", help="a float model saved with model.save('model.keras')")
    parser.add_argument("output", nargs="?", help="the .keras file to write (not with --dry-run)")
    parser.add_argument("--bits", type=cli_support.integer_in(1, 32), default=1,
                        help="1 (binary), 2, 4 or 8")
    parser.add_argument("--quantizer", default="dorefa", help="k-bit quantizer: dorefa, hwgq, lsq")
    parser.add_argument("--binary", default="plain",
                        help="binary scheme: plain, bireal, xnor, xnorpp, dorefa")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    parser.set_defaults(handler=binarize)


def _run_config(command, args, **overrides):
    """Loads and validates the config (before any training); `(config, None)` or `(None, status)`."""
    if getattr(args, "distribute", None):
        overrides = {**overrides, "distribute": args.distribute}
    extra = [f"{k}={v}" for k, v in overrides.items()]
    try:
        return run_config.load(None if args.defaults else args.config,
                               [*(args.set or []), *extra]), None
    except run_config.ConfigError as error:
        return None, _fail(command, str(error), EXIT_CONFIG)


def _export_failure(command, error, config):
    """Exit status and message of a failed conversion inside a training command."""
    from kerasbnn import export

    if error.report is not None:
        print(error.report)
    kept = f"The trained models are kept in {config.run_dir}."
    if isinstance(error, export.ConverterError):
        return _fail(command, f"{error} {kept} Run again with --resume to retry the conversion "
                              "alone.", EXIT_CONVERTER)
    return _fail(command, f"{error} {kept} To write the .tflite files without this check, run "
                          "again with --resume --set convert.verify=false.", EXIT_VERIFY)


def _run_steps(command, args, steps, **overrides):
    """Runs `steps(config, pipeline, args)`; each known failure becomes a message and its
    documented exit status."""
    config, status = _run_config(command, args, **overrides)
    if config is None:
        return status
    from kerasbnn import data, export, pipeline, run_dir, training

    try:
        steps(config, pipeline, args)
    except run_dir.UnwritableRunDirectoryError as error:
        return _fail(command, str(error), EXIT_OUTPUT)
    except data.DataNotFoundError as error:  # also corrupt files (a ValueError too)
        return _fail(command, str(error), EXIT_INPUT)
    except (run_dir.RunDirectoryError, ValueError) as error:
        return _fail(command, str(error), EXIT_CONFIG)
    except training.TrainingFailedError as error:
        return _fail(command, str(error), EXIT_TRAINING)
    except export.ExportError as error:
        return _export_failure(command, error, config)
    except OSError as error:  # a full disk, a folder made read-only during the run
        return _fail(command, *_io_failure(error, config))
    except KeyboardInterrupt:
        return _fail(command, f"interrupted; the finished steps and the last finished epoch "
                              f"are kept in {config.run_dir}: run the same command with "
                              "--resume to continue.", EXIT_INTERRUPTED)
    return EXIT_OK


def _io_failure(error, config):
    """`(message, status)` of an `OSError` that stopped a training command: a file of the run
    directory (or the teacher cache) that could not be written is exit 4, any other file
    (an input) exit 3."""
    outputs = [os.path.abspath(folder) + os.sep
               for folder in (config.run_dir, config.teachers.cache_dir) if folder]
    path = os.path.abspath(error.filename) if isinstance(error.filename, str) else None
    if path is not None and not any(path.startswith(d) for d in outputs):
        return f"could not read {error.filename} ({error.strerror}).", EXIT_INPUT
    what = str(error) if error.errno is None else (
        f"could not write {error.filename or 'a file'} ({error.strerror})")
    return (f"{what.rstrip('.')}. The finished steps and the last finished epoch are kept in "
            f"{config.run_dir}: free some space or make it writable, then run the same command "
            "with --resume to continue."), EXIT_OUTPUT


def train(args):
    """`kerasbnn train --config F --bits B`: train one model of the config's architecture at B bits."""

    def steps(config, pipeline, args):
        pipeline.run_training(config, args.bits, resume=args.resume)

    return _run_steps("train", args, steps)


def distill(args):
    """`kerasbnn distill --config F --method M`: distil a low-bit student with method M.

    The methods are `kerasbnn.methods.METHODS`: none (no distillation, the baseline); kd
    (classic single-teacher KD from the float teacher, with feature hints); at (attention
    transfer from the float teacher); mad (multi-bit adaptive distillation from the config's
    teachers); average (CMT-KD's "average teacher" baseline: plain KD from the mean softmax
    of the config's teachers, trained apart from the student); cmtkd (collaborative teachers
    trained with the student); progressive (the thesis' block-wise methods I/II/III from the
    float teacher, resumed stage by stage); pkkd (the adder twin of `model.arch` with kernel-based
    progressive distillation from its co-trained CNN). Teachers are trained, or read from
    the run directory. A method's own settings go in its section `distill.<method>` (e.g.
    `--set distill.pkkd.sigma_student=2`); config keys the method does not read are refused
    by name.
    """

    def steps(config, pipeline, args):
        result = pipeline.run_method(config, resume=args.resume)
        if result is not None:
            print(f"student accuracy {100 * result['accuracy']:.2f}%")

    return _run_steps("distill", args, steps, **{"distill.method": args.method})


def _method_names():
    from kerasbnn import methods

    return methods.METHODS.keys()


def pipeline_command(args):
    """`kerasbnn pipeline --config F`: teachers, one student per method of
    `distill.compare` (default: no KD and `distill.method`), LCE, one report."""

    def steps(config, pipeline, args):
        pipeline.run_pipeline(config, resume=args.resume)

    return _run_steps("pipeline", args, steps)


def benchmark(args):
    """`kerasbnn benchmark model.tflite`: median latency on this machine through LCE's interpreter
    (run in a child process: a corrupt file that crashes the interpreter gives exit 3)."""
    if not os.path.isfile(args.input):
        return _fail("benchmark", f"input file {args.input!r} does not exist.", EXIT_INPUT)
    with open(args.input, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":  # the TFLite flatbuffer's file identifier
        return _fail("benchmark", f"{args.input!r} is not a TFLite flatbuffer (no TFL3 "
                                  "identifier); give a .tflite file, e.g. from `kerasbnn convert`.",
                     EXIT_INPUT)
    ms, why = cli_support.measure_in_child(args)
    if ms is None:
        return _fail("benchmark", f"could not run {args.input!r}: {why}. The file may be "
                                  "truncated or corrupt: convert the model again.", EXIT_INPUT)
    print(f"{args.input}: median {ms:.3f} ms over {args.runs} runs, {args.threads} thread(s)")
    return EXIT_OK


def _add_run_options(parser):
    source = parser.add_mutually_exclusive_group()  # one of them: checked in `main`
    source.add_argument("--config", help="YAML or TOML run config (see examples/configs/)")
    source.add_argument("--defaults", action="store_true",
                        help="no config file: every default value, a full run (ResNet-20 of "
                             "width 1, four teachers, every image) in runs/default")
    parser.set_defaults(usage_error=parser.error)
    parser.epilog = presets.describe()
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set teachers.epochs=1")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the config's run_dir from its last checkpoint")
    parser.add_argument("--distribute", choices=run_config.STRATEGIES, default=None,
                        help="train under tf.distribute: mirrored = this host's devices, "
                             "multiworker = the hosts in TF_CONFIG (start the command on each)")


def _add_training_commands(subparsers):
    parser = subparsers.add_parser("train", help="train one model at a given precision",
                                   description=train.__doc__)
    _add_run_options(parser)
    parser.add_argument("--bits", type=cli_support.integer_in(1, 32), default=32,
                        help="32, 8, 4, 2 or 1 (1: the binary student)")
    parser.set_defaults(handler=train)

    parser = subparsers.add_parser("distill", help="distil a binary student from teachers",
                                   description=distill.__doc__)
    _add_run_options(parser)
    parser.add_argument("--method", choices=_method_names(),
                        default="mad", help="distillation method (see the description)")
    parser.set_defaults(handler=distill)

    parser = subparsers.add_parser("pipeline", help="every step: teachers, distillation, LCE, report",
                                   description=pipeline_command.__doc__)
    _add_run_options(parser)
    parser.set_defaults(handler=pipeline_command)

    parser = subparsers.add_parser("benchmark", help="latency of a .tflite file on this machine",
                                   description=benchmark.__doc__)
    parser.add_argument("input", help="a .tflite file")
    parser.add_argument("--threads", type=cli_support.integer_in(1), default=1,
                        help="interpreter threads (>= 1)")
    parser.add_argument("--runs", type=cli_support.integer_in(1), default=20,
                        help="timed runs (>= 1)")
    parser.add_argument("--xnnpack", action="store_true", help="XNNPACK for float ops (fair for float models)")
    parser.set_defaults(handler=benchmark)


def build_parser():
    """The argparse parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="kerasbnn", description="Binary networks for Keras 3.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_summary(subparsers)
    _add_import_larq(subparsers)
    _add_binarize(subparsers)
    _add_training_commands(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `kerasbnn` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads
    args = build_parser().parse_args(argv)  # --help and usage errors exit here, without it
    if getattr(args, "defaults", True) is False and args.config is None:
        args.usage_error("give the run's settings with --config FILE (e.g. --config "
                         "examples/configs/demo.yaml), or pass --defaults to run with every "
                         "default value (a full run: ResNet-20 of width 1, four teachers, every "
                         "image, in runs/default).")
    try:
        if args.handler is not benchmark:  # the benchmark loads TensorFlow in its child process
            cli_support.import_tensorflow_quietly()
        return args.handler(args)
    except KeyboardInterrupt:  # the training commands say what --resume continues
        return _fail(args.command, "interrupted.", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
