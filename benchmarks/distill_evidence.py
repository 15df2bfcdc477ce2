"""Does MAD beat no-KD and the best single teacher? Paired seeds through the pipeline (issue #17).

Every seed runs the pipeline's comparison (`kerasbnn.pipeline.run_compare`, i.e.
`distill.compare` without conversion) with three arms on the same teachers, data and seed:

- `none`: the binary student alone (cross-entropy), started from the float teacher;
- `kd`: KD from the best single teacher, chosen on the validation split by a documented, cheap
  rule: the teacher with the highest validation accuracy (ties: more bits), read from seed 0's
  teachers, not KD from each teacher in turn;
- `mad`: MAD from every teacher (`teachers.bits`), delta learning by `distill.delta_optimizer`
  (SGD at `delta_learning_rate` by default; the results in `benchmarks/results/` were measured
  before issue 30, with the student's Adam at `distill.delta_lr_scale` 20x: to repeat them,
  `--set distill.delta_optimizer=adam`).

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
import functools
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # paired_seeds, when imported

import paired_seeds  # noqa: E402
from kerasbnn import config as run_config  # noqa: E402

ARMS = ("none", "kd", "mad")
DEFAULTS = {"seeds": 5, "width": 0.5, "train_limit": 20000, "test_limit": None, "val_split": 0.1,
            "batch_size": 128, "float_epochs": 8, "teacher_epochs": 2, "epochs": 4,
            "bits": "32,8,4,2", "lr": 2e-3, "root": "runs/distill_evidence"}
QUICK = {"seeds": 2, "width": 0.25, "train_limit": 512, "test_limit": 256, "batch_size": 64,
         "float_epochs": 1, "teacher_epochs": 1, "epochs": 1, "bits": "32,2"}
#: The paired differences: `name: (arm, base)`.
PAIRS = {"mad_vs_no_kd": ("mad", "none"), "mad_vs_best_single": ("mad", "kd"),
         "mad_variant_vs_no_kd": ("mad_variant", "none"),
         "mad_variant_vs_best_single": ("mad_variant", "kd"),
         "mad_variant_vs_mad": ("mad_variant", "mad")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_seeds.add_arguments(parser, DEFAULTS, QUICK, "distill_evidence.json")
    parser.add_argument("--mad-variant", action="append", default=[], metavar="KEY=VALUE",
                        help="also train, per seed, a MAD student with these distill.* settings "
                             "(e.g. distill.delta_objective=teacher_ce), paired with the seed's "
                             "arms; reported as mad_variant")
    return paired_seeds.parse(parser, argv, QUICK, ("set", "mad_variant"))


def base_config(args, seed):
    """The pipeline config of one seed; everything but `seed` and `run_dir` is shared."""
    return paired_seeds.base_config(args, seed, arms=ARMS, quantizer="lsq", init="float",
                                    distill={"fusion": "learned"})


#: The bit width of the teacher with the highest validation accuracy (ties: more bits).
best_single_teacher = paired_seeds.best_single_teacher


def run_seed(args, seed, kd_teacher, print_fn):
    """One seed's comparison through the pipeline; returns its results (with `--mad-variant`,
    its MAD student under `students["mad_variant"]`, trained in a run directory of its own on
    the same seed: same initial weights and batches as the other arms)."""
    values = base_config(args, seed)
    if kd_teacher is not None:
        values.distill.kd_teacher = kd_teacher
    result = paired_seeds.compare(values, print_fn)
    if args.mad_variant:
        variant = run_config.from_dict(run_config.apply_overrides(
            run_config.to_dict(base_config(args, seed)), [f"run_dir={values.run_dir}_mad_variant",
                                         "distill.compare=[mad]", *args.mad_variant]))
        other = paired_seeds.compare(variant, print_fn)
        result["students"]["mad_variant"] = other["students"]["mad"]
    return result


def choose_kd_teacher(args, print_fn):
    """Trains (or loads) the teachers once and picks the best single one on validation."""
    values = dataclasses.replace(base_config(args, 0), run_dir=os.path.join(args.root, "teachers"))
    teachers = paired_seeds.train_teachers(values, args.bits, print_fn)
    return best_single_teacher(teachers), teachers


#: Per-seed paired differences (points), their medians and win counts.
summary = functools.partial(paired_seeds.paired, pairs=PAIRS)
#: The last line.
final_line = functools.partial(paired_seeds.final_line, arm="mad", bases=[
    ("no_kd", "mad_vs_no_kd"), ("best single", "mad_vs_best_single")])


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    start, quiet = paired_seeds.begin(args, paired_seeds.budget_line(args, "LSQ"), print_fn)
    kd_teacher, teachers = choose_kd_teacher(args, quiet)
    for bits, r in teachers.items():
        print_fn(f"teacher {bits:>2}-bit: test {100 * r['accuracy']:.2f}%, validation "
                 f"{100 * r['val_accuracy']:.2f}%")
    print_fn(f"best single teacher on validation: {kd_teacher}-bit")
    per_seed = []
    for seed in range(args.seeds):
        result = run_seed(args, seed, kd_teacher, quiet)
        per_seed.append(result)
        acc = paired_seeds.accuracies(result)
        variant = f", mad_variant {acc['mad_variant']:.2f}" if "mad_variant" in acc else ""
        print_fn(f"seed {seed}: no_kd {acc['none']:.2f}, kd({kd_teacher}-bit) {acc['kd']:.2f}, "
                 f"mad {acc['mad']:.2f}{variant}: mad - no_kd {acc['mad'] - acc['none']:+.2f}, "
                 f"mad - best single {acc['mad'] - acc['kd']:+.2f}")
    stats = summary(per_seed)
    record = {"args": vars(args), "kd_teacher": kd_teacher, "teachers": teachers,
              "seeds": per_seed, "line": final_line(stats)}
    paired_seeds.save(args, record, stats, start, print_fn)
    if "mad_variant_vs_no_kd" in stats:
        print_fn(paired_seeds.final_line(
            stats, f"mad_variant ({', '.join(args.mad_variant)})",
            [("no_kd", "mad_variant_vs_no_kd"), ("best single", "mad_variant_vs_best_single")]))
    print_fn(record["line"])
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
