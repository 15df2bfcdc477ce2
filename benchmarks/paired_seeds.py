"""Paired seeds through the pipeline's comparison: what the evidence benchmarks share.

`distill_evidence.py` (MAD) and `cmtkd_accuracy.py` (CMT-KD) run, per seed,
`kerasbnn.pipeline.run_compare` (`distill.compare` without conversion) with their arms on the
same teachers, data and seed. Within a seed every arm sees the same batches, so the per-seed
differences are the evidence: this module holds their budget arguments, the pipeline config of
one seed, the paired differences (medians, win counts) and the JSON record.

The benchmarks run as scripts (`python benchmarks/x.py`), so this folder is on `sys.path` and
they import it as `import paired_seeds`.
"""

import json
import os
import statistics
import time

from kerasbnn import config as run_config
from kerasbnn import pipeline, teacher_cache

#: The budget arguments: `(flag, type, help)`; each script gives its defaults.
BUDGET = (
    ("--seeds", int, "paired seeds"),
    ("--width", float, "ResNet-20 width multiplier"),
    ("--train-limit", int, "training images (the validation split included)"),
    ("--test-limit", int, "test images (None: all)"),
    ("--val-split", float, "fraction of the training images held out (None: none)"),
    ("--batch-size", int, "batch size"),
    ("--float-epochs", int, "float teacher epochs"),
    ("--teacher-epochs", int, "epochs each k-bit teacher is fine-tuned from the float one"),
    ("--epochs", int, "student epochs"),
    ("--bits", str, "teachers' bit widths, comma-separated"),
    ("--lr", float, "learning rate of teachers and students"),
)


def add_arguments(parser, defaults, quick, out):
    """The budget arguments of `defaults` (`{dest: value}`; a script leaves out the ones it
    does not use), `--root`, `--out` (default `benchmarks/results/<out>`), `--set` (a distill.*
    key of every arm), `--deterministic` and `--quick`, which replaces the budget by `quick`."""
    for flag, kind, text in BUDGET:
        dest = flag[2:].replace("-", "_")
        if dest not in defaults:
            continue
        parser.add_argument(flag, type=kind, default=defaults[dest], help=text)
    parser.add_argument("--root", default=defaults["root"], help="run directories")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", out))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a distill.* setting of every arm, e.g. distill.feature_weight=0 "
                             "(chosen on the validation split, never on the test split)")
    parser.add_argument("--deterministic", action="store_true",
                        help="TensorFlow's op determinism in every arm (`deterministic: true`); "
                             "measured: the plain arms repeat bit for bit, the progressive "
                             "method's only with TF_NUM_INTEROP_THREADS=1 too (docs/guide/pipeline.md)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a tiny smoke run: {', '.join(f'{k}={v}' for k, v in quick.items())}")


def parse(parser, argv, quick, distill_items=("set",)):
    """Parses `argv`: `--quick` applies `quick`, `--bits` (if any) becomes a list of ints, and every
    item of the `distill_items` arguments must be `distill.KEY=VALUE`."""
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    if hasattr(args, "bits"):
        args.bits = [int(b) for b in str(args.bits).split(",")]
    for item in (i for name in distill_items for i in getattr(args, name)):
        if not item.startswith("distill.") or "=" not in item:
            parser.error(f"--set {item!r}: give distill.KEY=VALUE (the loss of every arm).")
    return args


def data(args):
    """The `data` section every arm and seed shares: the budget's images, and the validation
    split carved from the training images with seed 0."""
    return {"train_limit": args.train_limit, "val_limit": args.test_limit,
            "batch_size": args.batch_size, "val_split": args.val_split, "split_seed": 0}


def seeding(args, seed):
    """The `seed` and `deterministic` settings of one seed's arms."""
    return {"seed": seed, "deterministic": args.deterministic}


def base_config(args, seed, *, arms, quantizer, init, distill=None):
    """The pipeline config of one seed (`--set` applied); everything but `seed` and
    `run_dir` is shared by the seeds, and the teachers (`teachers.seed=0`, cached under
    `--root`) are trained once."""
    values = {
        "run_dir": os.path.join(args.root, f"seed{seed}"), **seeding(args, seed),
        "data": data(args),
        "model": {"arch": "resnet20", "width_multiplier": args.width},
        "teachers": {"bits": args.bits, "quantizer": quantizer, "epochs": args.teacher_epochs,
                     "float_epochs": args.float_epochs, "learning_rate": args.lr, "seed": 0,
                     "cache_dir": os.path.join(args.root, "teacher_cache")},
        "student": {"epochs": args.epochs, "learning_rate": args.lr, "init": init},
        "distill": {"compare": list(arms), **(distill or {})},
    }
    return run_config.from_dict(run_config.apply_overrides(values, args.set))


def compare(values, print_fn):
    """`run_compare` of one seed's config; a finished run directory is resumed (reused)."""
    return pipeline.run_compare(values, resume=os.path.isdir(values.run_dir), print_fn=print_fn)


def train_teachers(values, bits, print_fn):
    """Trains (or loads from `values.teachers.cache_dir`) the teachers of `bits`, the float
    one first, in `values.run_dir`; returns `{bits: result}` (test and validation accuracy)."""
    results = {}
    for b in bits:  # the float teacher first, then each k-bit one from it (cached)
        pipeline.run_training(values, b, resume=os.path.isdir(values.run_dir), print_fn=print_fn)
        key, _ = teacher_cache.teacher_key(values, b)
        with open(os.path.join(values.teachers.cache_dir, f"{key}.json")) as f:
            results[b] = json.load(f)["result"]
    return results


def best_single_teacher(teachers):
    """The bit width of the teacher with the highest validation accuracy (ties: more bits)."""
    return max(teachers, key=lambda bits: (teachers[bits]["val_accuracy"], bits))


def accuracies(result):
    """`{arm: test accuracy in %}` of one seed's `run_compare` result."""
    return {arm: 100 * s["accuracy"] for arm, s in result["students"].items()}


def paired(per_seed, pairs):
    """`{name: {per_seed, median, wins, seeds}}`: per-seed differences (points) of each
    `name: (arm, base)` of `pairs`, for the seeds whose results hold both arms."""
    stats = {}
    for name, (arm, base) in pairs.items():
        values = [acc[arm] - acc[base] for acc in map(accuracies, per_seed)
                  if arm in acc and base in acc]
        if values:
            stats[name] = {"per_seed": values, "median": statistics.median(values),
                           "wins": sum(v > 0 for v in values), "seeds": len(values)}
    return stats


def versus(stat):
    """`+N.N pt (wins k/n)`: a paired difference's median and win count."""
    return f"{stat['median']:+.1f} pt (wins {stat['wins']}/{stat['seeds']})"


def final_line(stats, arm, bases):
    """`<arm> vs <label> +N.N pt (wins k/n), vs <label> ...` for `bases`, a list of
    `(label, name of a paired difference)`."""
    return f"{arm} " + ", ".join(f"vs {label} {versus(stats[name])}" for label, name in bases)


def begin(args, budget, print_fn):
    """Prints `budget` (e.g. `budget_line(args, "LSQ")`); returns the start time and where
    the pipeline's progress goes (nowhere with `--quick`)."""
    print_fn(budget)
    return time.perf_counter(), (lambda *_: None) if args.quick else print_fn


def budget_line(args, quantizer):
    """The budget of a run, in one line."""
    split = f" ({args.val_split:.0%} validation)" if args.val_split else ""
    return (f"budget: resnet20 width {args.width}, {args.train_limit} training images{split}, "
            f"test {args.test_limit or 'all'}, batch {args.batch_size}, teachers {args.bits} "
            f"({quantizer}; float {args.float_epochs} epochs, k-bit fine-tuned "
            f"{args.teacher_epochs}), students {args.epochs} epochs, {args.seeds} seeds, "
            f"lr {args.lr}")


def save(args, record, stats, start, print_fn):
    """Adds the summary and wall time to `record`, writes it to `--out` and prints each
    paired difference."""
    record.update(summary=stats, wall_seconds=time.perf_counter() - start)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2, default=str)
    for name, s in stats.items():
        print_fn(f"{name}: per seed {', '.join(f'{v:+.2f}' for v in s['per_seed'])}; median "
                 f"{s['median']:+.2f} pt, wins {s['wins']}/{s['seeds']}")
    print_fn(f"wall time {record['wall_seconds'] / 60:.1f} min; results in {args.out}")
    return record
