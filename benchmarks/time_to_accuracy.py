"""Validation accuracy against wall-clock minutes and images seen, for any run config's arms.

    python benchmarks/time_to_accuracy.py --config examples/configs/demo.yaml \\
        --set student.epochs=30 --arms none,mad --root /work/runs/tta

Trains (or, in a run directory that has them, resumes or reuses) the teachers and every arm
through `kerasbnn.pipeline.run_compare` in `--root`: stop it at any time and run the same
command again to continue. Then it reads each arm's training log (`logs/student_<arm>.csv`,
or one CSV per phase of a schedule, in the order they ran), whose epochs carry their wall time
and batches (`kerasbnn.training.EpochClock`), and writes, beside `--out` (JSON) a PNG of
validation accuracy against minutes and against images through the student. The minutes are
the students' own training epochs (validation passes included; teachers, BatchNorm
recomputation and evaluation excluded). The accuracies the last lines give are on the test
split after the pipeline's BatchNorm recomputation; the float teacher's is the one of the
same run. The last line is the first arm's:

    binary resnet20 w1.0: 89.4% test after 58 min (float teacher 91.2%, gap 1.8 pt)

Measure with nothing else heavy running on the machine; the minutes depend on it.
"""

import argparse
import csv
import glob
import json
import os
import sys

from kerasbnn import config as run_config
from kerasbnn import pipeline
from kerasbnn.plateau import validation_accuracy


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="a run config (YAML or TOML); default: the defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override, as for `kerasbnn pipeline --set`")
    parser.add_argument("--arms", default="none",
                        help="the methods to train side by side, comma-separated (the first "
                             "one's line is the last line printed)")
    parser.add_argument("--root", required=True,
                        help="the run directory (keep it outside the repository); an existing "
                             "one is resumed")
    parser.add_argument("--out", default=None,
                        help="the JSON to write (default <root>/time_to_accuracy.json); the PNG "
                             "goes beside it")
    args = parser.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not args.arms:
        parser.error("--arms: name at least one method, e.g. --arms none,mad")
    args.out = args.out or os.path.join(args.root, "time_to_accuracy.json")
    return args


def run_config_of(args):
    """The run config: `--config` with `--set`, `run_dir` = `--root`, compare = `--arms`."""
    values = {} if args.config is None else run_config.to_dict(run_config.load(args.config))
    values = run_config.apply_overrides(values, args.set)
    values = run_config.apply_overrides(values, [f"run_dir={args.root}"])
    values.setdefault("distill", {})["compare"] = list(args.arms)
    return run_config.from_dict(values)


def log_files(run_dir, name):
    """The CSV logs of `name` (`student_<arm>` or `teacher_w32a32`): one file, or one per
    phase of a schedule, ordered by when they were last written (the order phases ran)."""
    single = os.path.join(run_dir, "logs", f"{name}.csv")
    if os.path.exists(single):
        return [single]
    return sorted(glob.glob(os.path.join(run_dir, "logs", name, "*.csv")), key=os.path.getmtime)


def curve(paths, batch_size):
    """`[{epoch, phase, minutes, images, val_accuracy}]` over the logs `paths`, minutes and
    images summed over every epoch before and including the row's."""
    rows, seconds, images = [], 0.0, 0
    for path in paths:
        with open(path) as f:
            for row in csv.DictReader(f):
                if "epoch_seconds" not in row:
                    raise ValueError(f"{path} has no epoch_seconds column: it was written before "
                                     "kerasbnn.training.EpochClock existed; retrain in a new "
                                     "--root.")
                seconds += float(row["epoch_seconds"])
                images += int(float(row["epoch_steps"])) * batch_size
                rows.append({"epoch": len(rows) + 1,
                             "phase": os.path.splitext(os.path.basename(path))[0],
                             "minutes": seconds / 60, "images": images,
                             "val_accuracy": validation_accuracy(
                                 {k: v for k, v in row.items() if v != ""})})
    return rows


def minutes_to(rows, accuracy):
    """The minutes after which `rows` first reach `accuracy` on validation (None: never)."""
    return next((r["minutes"] for r in rows
                 if r["val_accuracy"] is not None and r["val_accuracy"] >= accuracy), None)


def summarize(config, result):
    """The record: per arm its curve, test accuracy and minutes, and the minutes each arm took
    to reach the validation accuracy that every arm reached (the lowest of their bests)."""
    root, batch = config.run_dir, config.data.batch_size
    arms = {}
    for arm, student in result["students"].items():
        rows = curve(log_files(root, f"student_{arm}"), batch)
        arms[arm] = {"test_accuracy": student["accuracy"], "curve": rows,
                     "minutes": rows[-1]["minutes"] if rows else 0.0,
                     "images": rows[-1]["images"] if rows else 0,
                     "best_val_accuracy": max((r["val_accuracy"] for r in rows
                                               if r["val_accuracy"] is not None), default=None)}
    bests = [a["best_val_accuracy"] for a in arms.values() if a["best_val_accuracy"] is not None]
    common = min(bests) if bests else None
    for record in arms.values():
        record["minutes_to_common"] = None if common is None else minutes_to(record["curve"],
                                                                              common)
    teacher = result["teachers"].get(32)
    return {"config": run_config.to_dict(config), "arms": arms, "common_val_accuracy": common,
            "float_teacher": None if teacher is None else {
                "test_accuracy": teacher["accuracy"],
                "curve": curve(log_files(root, "teacher_w32a32"), batch)}}


def line(config, arm, record):
    """`binary resnet20 w1.0 (arm): 89.4% test after 58 min (float teacher 91.2%, gap 1.8 pt)`
    (the arm is named unless it is `none`)."""
    student = record["arms"][arm]
    name = f"binary {config.model.arch} w{config.model.width_multiplier}"
    name += "" if arm == "none" else f" ({arm})"
    text = f"{name}: {100 * student['test_accuracy']:.1f}% test after {student['minutes']:.0f} min"
    teacher = record["float_teacher"]
    if teacher is None:
        return text + " (no float teacher in this run)"
    gap = 100 * (teacher["test_accuracy"] - student["test_accuracy"])
    return text + f" (float teacher {100 * teacher['test_accuracy']:.1f}%, gap {gap:.1f} pt)"


def plot(record, path):
    """Validation accuracy against minutes (left) and images through the student (right)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for arm, student in record["arms"].items():
        rows = [r for r in student["curve"] if r["val_accuracy"] is not None]
        for axis, key in zip(axes, ("minutes", "images")):
            axis.plot([r[key] for r in rows], [100 * r["val_accuracy"] for r in rows],
                      marker="o", label=arm)
    teacher = record["float_teacher"]
    for axis, label in zip(axes, ("student training, minutes", "images through the student")):
        if teacher is not None:
            axis.axhline(100 * teacher["test_accuracy"], color="gray", linestyle="--",
                         label="float teacher (test)")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy, %")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    config = run_config_of(args)
    if config.data.val_split is None:
        print_fn("note: data.val_split is not set, so the curves are on the test split; set "
                 "data.val_split=0.1 to keep the test split for the final accuracy only")
    result = pipeline.run_compare(config, resume=os.path.isdir(config.run_dir), print_fn=print_fn)
    record = summarize(config, result)
    record["lines"] = [line(config, arm, record) for arm in reversed(args.arms)]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2, default=str)
    plot(record, os.path.splitext(args.out)[0] + ".png")
    for arm in reversed(args.arms):
        student = record["arms"][arm]
        reached = student["minutes_to_common"]
        if reached is not None:
            print_fn(f"{arm}: {100 * record['common_val_accuracy']:.2f}% on validation (the "
                     f"lowest of the arms' bests) after {reached:.1f} min")
    for text in record["lines"]:
        print_fn(text)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
