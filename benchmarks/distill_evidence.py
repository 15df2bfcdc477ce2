"""Does MAD beat no-KD and the best single teacher? Paired seeds through the pipeline (issue #17).

Every seed runs the pipeline's comparison (`kerasbnn.pipeline.run_compare`, i.e.
`distill.compare` without conversion) with three arms on the same teachers, data and seed:

- `none`: the binary student alone (cross-entropy), started from the float teacher;
- `kd`: KD from the best single teacher, chosen on the validation split by a documented, cheap
  rule: the teacher with the highest validation accuracy (ties: more bits), read from seed 0's
  teachers, not KD from each teacher in turn;
- `mad`: MAD from every teacher (`teachers.bits`), delta learning at `distill.delta_lr_scale`.

Teachers are trained once (`teachers.seed=0`, `teachers.cache_dir` under `--root`) and loaded by
every seed; each seed trains only its students. The validation split (`data.val_split`, seed
`data.split_seed=0`) is carved from the training images, the reported accuracy is the test
split's. Paired seeds: within a seed, every arm starts from the same weights and sees the same
batches, so the per-seed differences are the evidence; the script prints them, their median
and win counts, writes `benchmarks/results/distill_evidence.json` (or `--out`), and its last line
reads like `mad vs no_kd +N.N pt (wins k/5), vs best single +N.N pt (wins k/5)`.

Budget (defaults): ResNet-20 at width 0.5, 20,000 training images (10% of them the validation
split), float teacher 8 epochs, 8/4/2-bit LSQ teachers fine-tuned 2 epochs, students 4 epochs,
5 seeds: about 60-90 min on 2 idle cores (estimated from images/s, not timed). A finished seed
is reused when the script runs again with the same options (`--resume` of the pipeline).

    python benchmarks/distill_evidence.py            # the evidence run
    python benchmarks/distill_evidence.py --quick    # a smoke run of a few minutes or less
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbnn import config as run_config  # noqa: E402
from kerasbnn import pipeline, teacher_cache  # noqa: E402

ARMS = ("none", "kd", "mad")
QUICK = {"seeds": 2, "width": 0.25, "train_limit": 512, "test_limit": 256, "batch_size": 64,
         "float_epochs": 1, "teacher_epochs": 1, "epochs": 1, "bits": "32,2"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.5, help="ResNet-20 width multiplier")
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--test-limit", type=int, default=None, help="test images (None: all)")
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--float-epochs", type=int, default=8)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="student epochs")
    parser.add_argument("--bits", default="32,8,4,2", help="teachers' bit widths")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--root", default="runs/distill_evidence", help="run directories")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "distill_evidence.json"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a distill.* setting of every arm, e.g. distill.feature_weight=0 "
                             "(chosen on the validation split, never on the test split)")
    parser.add_argument("--mad-variant", action="append", default=[], metavar="KEY=VALUE",
                        help="also train, per seed, a MAD student with these distill.* settings "
                             "(e.g. distill.delta_objective=teacher_ce), paired with the seed's "
                             "arms; reported as mad_variant")
    parser.add_argument("--quick", action="store_true",
                        help=f"a tiny smoke run: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.bits = [int(b) for b in str(args.bits).split(",")]
    for item in [*args.set, *args.mad_variant]:
        if not item.startswith("distill.") or "=" not in item:
            parser.error(f"--set {item!r}: give distill.KEY=VALUE (the loss of every arm).")
    return args


def base_config(args, seed):
    """The pipeline config of one seed; everything but `seed` and `run_dir` is shared."""
    values = {
        "run_dir": os.path.join(args.root, f"seed{seed}"), "seed": seed,
        "data": {"train_limit": args.train_limit, "val_limit": args.test_limit,
                 "batch_size": args.batch_size, "val_split": args.val_split, "split_seed": 0},
        "model": {"arch": "resnet20", "width_multiplier": args.width},
        "teachers": {"bits": args.bits, "quantizer": "lsq", "epochs": args.teacher_epochs,
                     "float_epochs": args.float_epochs, "learning_rate": args.lr, "seed": 0,
                     "cache_dir": os.path.join(args.root, "teacher_cache")},
        "student": {"epochs": args.epochs, "learning_rate": args.lr, "init": "float"},
        "distill": {"compare": list(ARMS), "fusion": "learned"},
    }
    return run_config.from_dict(run_config.apply_overrides(values, args.set))


def best_single_teacher(teachers):
    """The bit width of the teacher with the highest validation accuracy (ties: more bits)."""
    return max(teachers, key=lambda bits: (teachers[bits]["val_accuracy"], bits))


def run_seed(args, seed, kd_teacher, print_fn):
    """One seed's comparison through the pipeline; returns its results (with `--mad-variant`,
    its MAD student under `students["mad_variant"]`, trained in a run directory of its own on
    the same seed: same initial weights and batches as the other arms)."""
    values = base_config(args, seed)
    if kd_teacher is not None:
        values.distill.kd_teacher = kd_teacher
    resume = os.path.isdir(values.run_dir)
    result = pipeline.run_compare(values, resume=resume, print_fn=print_fn)
    if args.mad_variant:
        variant = run_config.from_dict(run_config.apply_overrides(
            run_config.to_dict(base_config(args, seed)), [f"run_dir={values.run_dir}_mad_variant",
                                         "distill.compare=[mad]", *args.mad_variant]))
        other = pipeline.run_compare(variant, resume=os.path.isdir(variant.run_dir),
                                     print_fn=print_fn)
        result["students"]["mad_variant"] = other["students"]["mad"]
    return result


def choose_kd_teacher(args, print_fn):
    """Trains (or loads) the teachers once and picks the best single one on validation."""
    values = dataclasses.replace(base_config(args, 0), run_dir=os.path.join(args.root, "teachers"))
    for bits in args.bits:  # the float teacher first, then each k-bit one from it (cached)
        pipeline.run_training(values, bits, resume=os.path.isdir(values.run_dir), print_fn=print_fn)
    teachers = {}
    for bits in args.bits:
        key, _ = teacher_cache.teacher_key(values, bits)
        with open(os.path.join(values.teachers.cache_dir, f"{key}.json")) as f:
            teachers[bits] = json.load(f)["result"]
    return best_single_teacher(teachers), teachers


def summary(per_seed):
    """Per-seed paired differences (points), their medians and win counts."""
    diffs = {"mad_vs_no_kd": [], "mad_vs_best_single": []}
    for result in per_seed:
        acc = {arm: 100 * s["accuracy"] for arm, s in result["students"].items()}
        diffs["mad_vs_no_kd"].append(acc["mad"] - acc["none"])
        diffs["mad_vs_best_single"].append(acc["mad"] - acc["kd"])
        if "mad_variant" in acc:
            for name, arm in (("no_kd", "none"), ("best_single", "kd"), ("mad", "mad")):
                diffs.setdefault(f"mad_variant_vs_{name}", []).append(
                    acc["mad_variant"] - acc[arm])
    return {name: {"per_seed": values, "median": statistics.median(values),
                   "wins": sum(v > 0 for v in values), "seeds": len(values)}
            for name, values in diffs.items()}


def final_line(stats):
    a, b = stats["mad_vs_no_kd"], stats["mad_vs_best_single"]
    return (f"mad vs no_kd {a['median']:+.1f} pt (wins {a['wins']}/{a['seeds']}), "
            f"vs best single {b['median']:+.1f} pt (wins {b['wins']}/{b['seeds']})")


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    print_fn(f"budget: resnet20 width {args.width}, {args.train_limit} training images "
             f"({args.val_split:.0%} validation), test {args.test_limit or 'all'}, batch "
             f"{args.batch_size}, teachers {args.bits} (LSQ; float {args.float_epochs} epochs, "
             f"k-bit fine-tuned {args.teacher_epochs}), students {args.epochs} epochs, "
             f"{args.seeds} seeds, lr {args.lr}")
    start = time.perf_counter()
    quiet = (lambda *_: None) if args.quick else print_fn
    kd_teacher, teachers = choose_kd_teacher(args, quiet)
    for bits, r in teachers.items():
        print_fn(f"teacher {bits:>2}-bit: test {100 * r['accuracy']:.2f}%, validation "
                 f"{100 * r['val_accuracy']:.2f}%")
    print_fn(f"best single teacher on validation: {kd_teacher}-bit")
    per_seed = []
    for seed in range(args.seeds):
        result = run_seed(args, seed, kd_teacher, quiet)
        per_seed.append(result)
        acc = {arm: 100 * s["accuracy"] for arm, s in result["students"].items()}
        variant = f", mad_variant {acc['mad_variant']:.2f}" if "mad_variant" in acc else ""
        print_fn(f"seed {seed}: no_kd {acc['none']:.2f}, kd({kd_teacher}-bit) {acc['kd']:.2f}, "
                 f"mad {acc['mad']:.2f}{variant}: mad - no_kd {acc['mad'] - acc['none']:+.2f}, "
                 f"mad - best single {acc['mad'] - acc['kd']:+.2f}")
    stats = summary(per_seed)
    record = {"args": vars(args), "kd_teacher": kd_teacher, "teachers": teachers,
              "seeds": per_seed, "summary": stats, "wall_seconds": time.perf_counter() - start,
              "line": final_line(stats)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2, default=str)
    for name, s in stats.items():
        print_fn(f"{name}: per seed {', '.join(f'{v:+.2f}' for v in s['per_seed'])}; median "
                 f"{s['median']:+.2f} pt, wins {s['wins']}/{s['seeds']}")
    print_fn(f"wall time {record['wall_seconds'] / 60:.1f} min; results in {args.out}")
    if "mad_variant_vs_no_kd" in stats:
        a, b = stats["mad_variant_vs_no_kd"], stats["mad_variant_vs_best_single"]
        print_fn(f"mad_variant ({', '.join(args.mad_variant)}) vs no_kd {a['median']:+.1f} pt "
                 f"(wins {a['wins']}/{a['seeds']}), vs best single {b['median']:+.1f} pt "
                 f"(wins {b['wins']}/{b['seeds']})")
    print_fn(final_line(stats))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
