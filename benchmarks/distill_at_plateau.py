"""Distillation compared at the student's plateau, on paired seeds (issue #31, item 6).

Every earlier comparison stopped its students while they were still learning, so a method's
gain could be a head start. Here the students follow the recipe (docs/guide/recipe.md: the
`bireal` block, started from the float teacher, cosine Adam at 5e-3) for a budget at which the
binary student alone has stopped improving on validation, and this script shows that it has:
seed 0's `none` student is also trained for twice the epochs (`--plateau-factor`), and the
record gives both accuracies and the last epochs' validation curve.

The arms, per seed, on the same teachers, data, initial weights and batches (paired seeds):

- `none`: the recipe with no distillation term;
- `kd`: KD from the best single teacher, chosen on the validation split (the highest
  validation accuracy; ties: more bits); ReActNet's distributional loss when it is the float one;
- `mad`: MAD at the logits over every teacher, delta learned by the paper's objective (`kl`,
  eqs. 13-14), delta's SGD rate chosen on seed 0's validation split among `--delta-rates`;
- `mad_teacher_ce`: the same with `distill.delta_objective: teacher_ce` (ours);
- `average`: the teachers' logits averaged (CMT-KD's baseline).

Teachers are trained once (`teachers.seed=0`; the float one to its validation plateau with
`teachers.patience`, the k-bit ones fine-tuned from it) and cached under `--root`; every
distilling arm reads them as cached logits (`distill.teacher_logits: cached`). The test split
only reports.

Resumable: every seed is a pipeline run directory under `--root`, resumed by the next call
(a killed arm continues from its last finished epoch). Stop it at any time and run the same
command again. It writes `--out` (JSON: per seed every arm's test and validation accuracy,
delta at the end, the curves) and a PNG beside it: mean validation accuracy against images
and against minutes, per arm. Before its last line it prints, per arm, when its mean
validation curve first reaches what `none` ends at (`sooner`: epochs, and minutes at the arm's
median epoch time). Its last line reads like
`mad vs no_kd +N.N pt (wins k/5), vs best single +N.N pt (wins k/5)`.

    python benchmarks/distill_at_plateau.py --root /work/runs/plateau_compare
    python benchmarks/distill_at_plateau.py --quick --root /tmp/q   # a smoke run, minutes
"""

import argparse
import functools
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # delta_rate, paired_seeds, ...

import delta_rate  # noqa: E402
import paired_seeds  # noqa: E402
import time_to_accuracy  # noqa: E402
from kerasbnn import config as run_config  # noqa: E402

ARMS = ("none", "kd", "mad", "average")
VARIANT = "mad_teacher_ce"
DEFAULTS = {"seeds": 5, "width": 0.5, "train_limit": 10000, "test_limit": None, "val_split": 0.1,
            "batch_size": 128, "float_epochs": 20, "teacher_epochs": 2, "epochs": 15,
            "bits": "32,4,2", "lr": 5e-3, "root": "runs/distill_at_plateau"}
QUICK = {"seeds": 2, "width": 0.25, "train_limit": 512, "test_limit": 256, "batch_size": 64,
         "float_epochs": 2, "teacher_epochs": 1, "epochs": 2, "bits": "32,2"}
PAIRS = {"mad_vs_no_kd": ("mad", "none"), "mad_vs_best_single": ("mad", "kd"),
         "mad_teacher_ce_vs_no_kd": (VARIANT, "none"),
         "mad_teacher_ce_vs_best_single": (VARIANT, "kd"),
         "average_vs_no_kd": ("average", "none"), "kd_vs_no_kd": ("kd", "none")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_seeds.add_arguments(parser, DEFAULTS, QUICK, "distill_at_plateau.json")
    parser.add_argument("--block", default="bireal", help="model.block of every network")
    parser.add_argument("--teacher-lr", type=float, default=2e-3, help="the teachers' peak rate")
    parser.add_argument("--teacher-patience", type=int, default=4,
                        help="teachers.patience: the float teacher stops at its plateau")
    parser.add_argument("--delta-rates", default="0.01,0.1,1.0",
                        help="delta's SGD rates tried on seed 0's validation split")
    parser.add_argument("--plateau-factor", type=int, default=2,
                        help="seed 0's none student also trains this many times the epochs")
    args = paired_seeds.parse(parser, argv, QUICK)
    args.delta_rates = [float(r) for r in args.delta_rates.split(",")]
    return args


def seed_config(args, seed, *, run_dir=None, arms=ARMS, overrides=()):
    """One seed's pipeline config: the recipe's student, the shared cached teachers, and
    `overrides` (`KEY=VALUE`) on top of `--set`. The loss settings are left out of a run of
    `none` alone, which refuses settings it does not read."""
    loss = {} if tuple(arms) == ("none",) else {
        "fusion": "learned", "feature_weight": 0.0, "teacher_logits": "cached"}
    values = {
        "run_dir": run_dir or os.path.join(args.root, f"seed{seed}"),
        **paired_seeds.seeding(args, seed),
        "data": {**paired_seeds.data(args), "augment": False},
        "model": {"arch": "resnet20", "width_multiplier": args.width, "block": args.block},
        "teachers": {"bits": args.bits, "quantizer": "lsq", "epochs": args.teacher_epochs,
                     "float_epochs": args.float_epochs, "learning_rate": args.teacher_lr,
                     "seed": 0, "patience": args.teacher_patience,
                     "cache_dir": os.path.join(args.root, "teacher_cache")},
        "student": {"epochs": args.epochs, "learning_rate": args.lr, "init": "float"},
        "distill": {"compare": list(arms), **loss},
    }
    return run_config.from_dict(run_config.apply_overrides(values, [*args.set, *overrides]))


def teachers(args, print_fn):
    """Trains (or loads) the teachers once; `{bits: result}` (test and validation accuracy)."""
    values = seed_config(args, 0, run_dir=os.path.join(args.root, "teachers"))
    return paired_seeds.train_teachers(values, args.bits, print_fn)


#: The bit width of the teacher with the highest validation accuracy (ties: more bits).
best_single = paired_seeds.best_single_teacher


def run(config, print_fn):
    """`run_compare` of `config`, resumed when its run directory exists; returns the result
    with, per arm, its validation curve and final delta (`arm_record`)."""
    result = paired_seeds.compare(config, print_fn)
    for arm, student in result["students"].items():
        student.update(arm_record(config, arm, student))
    return result


def arm_record(config, arm, student):
    """An arm's validation curve (`time_to_accuracy.curve`), its best validation accuracy,
    and for mad and average its delta at the end (`delta_rate.final_delta` of its results
    `student`)."""
    rows = time_to_accuracy.curve(time_to_accuracy.log_files(config.run_dir, f"student_{arm}"),
                                  config.data.batch_size)
    record = {"curve": rows, "best_val_accuracy": max(
        (r["val_accuracy"] for r in rows if r["val_accuracy"] is not None), default=None)}
    delta = delta_rate.final_delta(student)
    if delta:
        record["delta"] = delta
    return record


def choose_delta_rate(args, kd_teacher, print_fn):
    """Seed 0's MAD at every `--delta-rates` rate (a run directory each; the same seed, start
    and batches), chosen by `delta_rate.choose`: the rate whose student, as kept (the last
    epoch, BatchNorm recomputed), has the best validation accuracy (ties: the smaller rate).
    Returns the rate and the tries."""
    def config_for(rate):
        return seed_config(args, 0, arms=("mad",),
                           run_dir=os.path.join(args.root, f"seed0_delta{rate:g}"),
                           overrides=[f"distill.delta_learning_rate={rate}",
                                      f"distill.kd_teacher={kd_teacher}"])

    def train(config, quiet):
        return run(config, quiet)["students"]["mad"]

    best, tries = delta_rate.choose(config_for, args.delta_rates, train=train,
                                    print_fn=print_fn, quiet=print_fn)
    keep = ("best_val_accuracy", "delta", "val_accuracy")
    return best, {rate: {k: mad.get(k) for k in keep} for rate, mad in tries.items()}


def fmt(values):
    return "-" if not values else "/".join(f"{v:.3f}" for v in values)


def run_seed(args, seed, kd_teacher, rate, print_fn):
    """One seed: the arms in one run directory, then MAD with the teacher_ce objective in its
    own (same seed: same start and batches)."""
    chosen = [f"distill.kd_teacher={kd_teacher}", f"distill.delta_learning_rate={rate}"]
    result = run(seed_config(args, seed, overrides=chosen), print_fn)
    variant = seed_config(args, seed, arms=("mad",), overrides=[
        *chosen, "distill.delta_objective=teacher_ce"],
        run_dir=os.path.join(args.root, f"seed{seed}_{VARIANT}"))
    result["students"][VARIANT] = run(variant, print_fn)["students"]["mad"]
    return result


def plateau_check(args, print_fn):
    """Seed 0's `none` student at `--plateau-factor` times the epochs (its own run directory,
    same start and batch order): `{epochs, test, best_val_accuracy, curve}`."""
    epochs = args.epochs * args.plateau_factor
    config = seed_config(args, 0, arms=("none",), overrides=[f"student.epochs={epochs}"],
                         run_dir=os.path.join(args.root, f"seed0_none_x{args.plateau_factor}"))
    none = run(config, print_fn)["students"]["none"]
    return {"epochs": epochs, "test_accuracy": none["accuracy"],
            "best_val_accuracy": none["best_val_accuracy"], "curve": none["curve"]}


def mean_curves(per_seed):
    """Per arm, the mean over seeds of the validation accuracy at each epoch, with the mean
    minutes and images (`time_to_accuracy.plot` draws it)."""
    arms = {}
    for arm in per_seed[0]["students"]:
        curves = [s["students"][arm]["curve"] for s in per_seed if arm in s["students"]]
        n = min(len(c) for c in curves)
        arms[arm] = {"curve": [{
            key: statistics.fmean(c[i][key] for c in curves)
            for key in ("minutes", "images", "val_accuracy")} for i in range(n)]}
    return {"arms": arms, "float_teacher": None}


def epoch_seconds(rows):
    """The seconds of each epoch of a curve (its minutes are cumulative)."""
    minutes = [0.0] + [r["minutes"] for r in rows]
    return [60 * (b - a) for a, b in zip(minutes, minutes[1:])]


def reach(rows, accuracy, seconds):
    """The first epoch of `rows` at or above `accuracy` on validation, with its images and its
    minutes at `seconds` an epoch (None: never)."""
    row = next((r for r in rows if r["val_accuracy"] >= accuracy), None)
    return None if row is None else {
        "epochs": row["epoch"], "images": row["images"], "minutes": row["epoch"] * seconds / 60}


def sooner(per_seed):
    """Does distillation reach an accuracy sooner, and by how much? On each arm's mean
    validation curve over the seeds: the epochs, images and minutes to first reach what `none`
    ends at, and the lowest of the arms' best mean accuracies. Minutes are epochs times the
    arm's median epoch over every seed: the median leaves out epochs that shared the machine."""
    curves = {arm: c["curve"] for arm, c in mean_curves(per_seed)["arms"].items()}
    for rows in curves.values():
        for epoch, row in enumerate(rows, 1):
            row["epoch"] = epoch
    targets = {"none_at_the_end": curves["none"][-1]["val_accuracy"],
               "every_arm_reaches": min(max(r["val_accuracy"] for r in c) for c in curves.values())}
    arms = {}
    for arm, rows in curves.items():
        seconds = statistics.median(t for s in per_seed if arm in s["students"]
                                    for t in epoch_seconds(s["students"][arm]["curve"]))
        arms[arm] = {"median_epoch_seconds": seconds,
                     **{name: reach(rows, value, seconds) for name, value in targets.items()}}
    return {"targets": targets, "arms": arms}


def sooner_lines(record):
    """One line per arm: the epochs and minutes to reach `none`'s final mean accuracy."""
    target = 100 * record["targets"]["none_at_the_end"]
    lines = []
    for arm, r in record["arms"].items():
        hit = r["none_at_the_end"]
        when = "never" if hit is None else f"epoch {hit['epochs']} ({hit['minutes']:.1f} min)"
        lines.append(f"{arm} reaches none's final mean validation accuracy ({target:.2f}%) at "
                     f"{when}; {r['median_epoch_seconds']:.1f} s an epoch")
    return lines


summary = functools.partial(paired_seeds.paired, pairs=PAIRS)
final_line = functools.partial(paired_seeds.final_line, arm="mad", bases=[
    ("no_kd", "mad_vs_no_kd"), ("best single", "mad_vs_best_single")])


def seed_line(seed, result, kd_teacher):
    acc = paired_seeds.accuracies(result)
    deltas = fmt(result["students"]["mad"].get("delta"))
    return (f"seed {seed}: " + ", ".join(f"{arm} {value:.2f}" for arm, value in acc.items())
            + f" (kd from the {kd_teacher}-bit teacher); mad's delta {deltas}")


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    start, quiet = paired_seeds.begin(
        args, paired_seeds.budget_line(args, "LSQ") + f", block {args.block}", print_fn)
    results = teachers(args, quiet)
    for bits, r in results.items():
        print_fn(f"teacher {bits:>2}-bit: test {100 * r['accuracy']:.2f}%, validation "
                 f"{100 * r['val_accuracy']:.2f}%")
    kd_teacher = best_single(results)
    print_fn(f"best single teacher on validation: {kd_teacher}-bit")
    rate, tries = choose_delta_rate(args, kd_teacher, quiet)
    print_fn(f"delta's SGD rate chosen on validation: {rate:g}")
    per_seed, check = [], None
    for seed in range(args.seeds):
        per_seed.append(run_seed(args, seed, kd_teacher, rate, quiet))
        print_fn(seed_line(seed, per_seed[-1], kd_teacher))
        if seed == 0 and args.plateau_factor > 1:
            check = plateau_check(args, quiet)
            none = per_seed[0]["students"]["none"]
            print_fn(f"plateau check, seed 0 none: {args.epochs} epochs "
                     f"{100 * none['accuracy']:.2f}% "
                     f"test ({100 * none['best_val_accuracy']:.2f}% best validation), "
                     f"{check['epochs']} epochs {100 * check['test_accuracy']:.2f}% "
                     f"({100 * check['best_val_accuracy']:.2f}%)")
    stats = summary(per_seed)
    record = {"args": vars(args), "teachers": results, "kd_teacher": kd_teacher,
              "delta_rate": rate, "delta_rate_tries": tries, "plateau_check": check,
              "seeds": per_seed, "mean_curves": mean_curves(per_seed), "sooner": sooner(per_seed),
              "line": final_line(stats)}
    paired_seeds.save(args, record, stats, start, print_fn)
    time_to_accuracy.plot(record["mean_curves"], os.path.splitext(args.out)[0] + ".png")
    for line in sooner_lines(record["sooner"]):
        print_fn(line)
    print_fn(record["line"])
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
