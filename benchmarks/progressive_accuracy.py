"""Does block-wise distillation (thesis method II, LIT) beat plain training? Paired seeds through the pipeline.

Every seed trains two arms of the pipeline (`kerasbnn.pipeline.run_compare`, i.e.
`distill.compare` without conversion) on the same float teacher, data and seed:

- `progressive`: the binary ResNet-20 distilled block by block from the float teacher
  (`kerasbnn.methods.progressive`, `--variant`, II by default: the thesis' LIT phase of
  3 x `--epochs-per-stage` epochs, then `--epochs` of the whole student);
- `plain`: the same binary student trained with cross-entropy alone (the `none` method) for the
  progressive arm's total number of epochs.

Both start from the float teacher's weights (`student.init: float`: the same weights, copied
and BatchNorm recomputed alike, `kerasbnn.comparison`) and train the same network (`distill.options.block: null`, the zoo's
ResNet-20 block, which `none` trains too). The two arms differ in their `student.epochs`, so
each has its own run directory (`<root>/seed<n>` and `<root>/seed<n>_plain`); on the same
seed they start from the same weights and see the same batches in the same order. The float
teacher is trained once (`teachers.seed=0`, cached under `--root`) and loaded by every seed.
The validation split (`data.val_split`, seed 0) is carved from the training images and nothing
is chosen on the test split (the thesis' settings are kept; nothing is tuned here).

The script prints the per-seed differences, their median and win count, writes
`benchmarks/results/progressive_paired.json` (or `--out`), and its last line reads like
`progressive II vs plain +N.N pt (wins k/5)`.

    python benchmarks/progressive_accuracy.py           # the evidence run (about 30 min)
    python benchmarks/progressive_accuracy.py --quick   # a smoke run of a few minutes
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # paired_seeds, when imported

import paired_seeds  # noqa: E402
from kerasbnn import config as run_config  # noqa: E402

DEFAULTS = {"seeds": 5, "width": 0.5, "train_limit": 10000, "test_limit": None, "val_split": 0.1,
            "batch_size": 128, "float_epochs": 10, "epochs": 3, "lr": 2e-3,
            "root": "runs/progressive_accuracy"}
QUICK = {"seeds": 2, "width": 0.25, "train_limit": 512, "test_limit": 256, "batch_size": 64,
         "float_epochs": 1, "epochs": 1, "epochs_per_stage": 1}
PAIRS = {"progressive_vs_plain": ("progressive", "plain")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_seeds.add_arguments(parser, DEFAULTS, QUICK, "progressive_paired.json")
    parser.add_argument("--variant", default="II", choices=("I", "II", "III"))
    parser.add_argument("--epochs-per-stage", type=int, default=1,
                        help="epochs of each KD stage (method II: its LIT phase lasts 3x this)")
    return paired_seeds.parse(parser, argv, QUICK)


def arm_config(args, seed, method, epochs, suffix=""):
    """The pipeline config of one arm of one seed (`--set` applied)."""
    values = {
        "run_dir": os.path.join(args.root, f"seed{seed}{suffix}"),
        **paired_seeds.seeding(args, seed),
        "data": paired_seeds.data(args),
        "model": {"arch": "resnet20", "width_multiplier": args.width},
        "teachers": {"bits": [32], "epochs": args.float_epochs, "learning_rate": args.lr,
                     "seed": 0, "cache_dir": os.path.join(args.root, "teacher_cache")},
        "student": {"epochs": epochs, "learning_rate": args.lr},
        "distill": {"compare": [method]},
    }
    if method == "progressive":
        values["distill"]["options"] = {"variant": args.variant, "block": None,
                                        "epochs_per_stage": args.epochs_per_stage}
    return run_config.from_dict(run_config.apply_overrides(values, args.set))


def run_seed(args, seed, print_fn):
    """`{"teachers", "students": {"progressive", "plain"}}` of one seed."""
    distilled = paired_seeds.compare(arm_config(args, seed, "progressive", args.epochs), print_fn)
    student = distilled["students"]["progressive"]
    plain = paired_seeds.compare(
        arm_config(args, seed, "none", student["total_epochs"], "_plain"), print_fn)
    return {"teachers": distilled["teachers"],
            "students": {"progressive": student, "plain": plain["students"]["none"]}}


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    start, quiet = paired_seeds.begin(args, (
        f"budget: resnet20 width {args.width}, {args.train_limit} training images "
        f"({args.val_split or 0:.0%} validation), test {args.test_limit or 'all'}, batch "
        f"{args.batch_size}, float teacher {args.float_epochs} epochs, method "
        f"{args.variant} with {args.epochs_per_stage} epoch(s) per stage then {args.epochs}, "
        f"{args.seeds} seeds, lr {args.lr}"), print_fn)
    per_seed = []
    for seed in range(args.seeds):
        result = run_seed(args, seed, quiet)
        per_seed.append(result)
        acc = paired_seeds.accuracies(result)
        epochs = result["students"]["progressive"]["total_epochs"]
        print_fn(f"seed {seed}: float teacher {100 * result['teachers'][32]['accuracy']:.2f}, "
                 f"plain {acc['plain']:.2f}, progressive {args.variant} {acc['progressive']:.2f} "
                 f"({epochs} epochs each): {acc['progressive'] - acc['plain']:+.2f}")
    stats = paired_seeds.paired(per_seed, PAIRS)
    line = f"progressive {args.variant} vs plain {paired_seeds.versus(stats['progressive_vs_plain'])}"
    record = {"args": vars(args), "seeds": per_seed, "line": line}
    paired_seeds.save(args, record, stats, start, print_fn)
    print_fn(line)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
