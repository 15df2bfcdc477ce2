"""Does PKKD beat the adder network trained alone, with lambda chosen on validation? Paired seeds.

Every arm is one run of the pipeline's `pkkd` method (`kerasbnn.pipeline.run_compare`,
`distill.compare: [pkkd]`): the adder twin of ResNet-20 (`adder_resnet20`, width `--width`),
trained `--epochs` epochs with AdderNet's recipe (SGD, momentum 0.9, cosine decay from `--lr`
to 0), its BatchNormalization statistics recomputed afterwards over the training images (the
pipeline's `student.precise_bn`, in batches of 1,000):

- `plain`: the adder network alone (`distill.options.pkkd: false`, the paper's baseline);
- `pkkd`: PKKD (Xu et al., NeurIPS 2020, eq. 8) from its CNN twin trained alongside, with the
  feature-loss weight lambda (`distill.options.feature_weight`) chosen first, and the kernels'
  offset `--kernel-offset` (`PKKDDistiller(kernel_offset=...)`: `max`, the default, keeps the
  kernel values in (0, 1]; `mean` is the earlier, unbounded reading).

1. **lambda, on validation.** Seed 0 trains one PKKD arm per `--lambdas` value; the one with the
   highest accuracy on the validation split (`data.val_split`, carved from the training images,
   seed 0; ties: the smaller lambda) is kept. The test split chooses nothing.
2. **Paired seeds.** Every seed trains `plain` and `pkkd` at that lambda, each in its own run
   directory (`<root>/seed<n>_plain`, `<root>/seed<n>_<offset>_lambda<l>`; seed 0's PKKD arm is
   the one from step 1). On the same seed both adder networks start from the same weights and
   see the same batches in the same order.

The script prints the validation accuracies, the per-seed differences, their median and win
count, writes `benchmarks/results/pkkd_paired.json` (or `--out`), and its last line reads like
`pkkd (lambda=L, chosen on validation; kernel offset O) vs plain adder +N.N pt (wins k/5)`.

    python benchmarks/pkkd_accuracy.py           # the evidence run (73 min, plain arms reused)
    python benchmarks/pkkd_accuracy.py --quick   # a smoke run of a few minutes
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # paired_seeds, when imported

import paired_seeds  # noqa: E402
from kerasbnn import config as run_config  # noqa: E402
from kerasbnn.distill.pkkd import KERNEL_OFFSETS  # noqa: E402

DEFAULTS = {"seeds": 5, "width": 0.5, "train_limit": 5000, "test_limit": None, "val_split": 0.1,
            "batch_size": 128, "epochs": 3, "lr": 0.05, "root": "runs/pkkd_accuracy"}
QUICK = {"seeds": 2, "width": 0.25, "train_limit": 512, "test_limit": 256, "batch_size": 64,
         "epochs": 1, "lambdas": [0.01, 1.0]}
PAIRS = {"pkkd_vs_plain": ("pkkd", "plain")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_seeds.add_arguments(parser, DEFAULTS, QUICK, "pkkd_paired.json")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0],
                        help="candidate feature-loss weights, chosen among on validation (the "
                             "max offset's term starts near 1; the mean offset's run used "
                             "0.001 0.01 0.1 1)")
    parser.add_argument("--kernel-offset", choices=KERNEL_OFFSETS, default=KERNEL_OFFSETS[0],
                        help="PKKD's kernel offset (distill.options.kernel_offset)")
    return paired_seeds.parse(parser, argv, QUICK)


def arm_config(args, seed, weight):
    """The pipeline config of one arm: the adder network alone (`weight` None) or PKKD with
    lambda = `weight` (`--set` applied)."""
    options = {"pkkd": weight is not None, "width_multiplier": args.width, "optimizer": "sgd"}
    if weight is not None:
        options.update(feature_weight=weight, kernel_offset=args.kernel_offset)
    values = {
        "run_dir": os.path.join(args.root, f"seed{seed}_{arm_name(args, weight)}"),
        **paired_seeds.seeding(args, seed),
        "data": paired_seeds.data(args),
        "student": {"epochs": args.epochs, "learning_rate": args.lr},
        "distill": {"compare": ["pkkd"], "options": options},
    }
    return run_config.from_dict(run_config.apply_overrides(values, args.set))


def arm_name(args, weight):
    return "plain" if weight is None else f"{args.kernel_offset}_lambda{weight:g}"


def train(args, seed, weight, print_fn):
    """The results (`results/student_pkkd.json`) of one arm of one seed."""
    return paired_seeds.compare(arm_config(args, seed, weight), print_fn)["students"]["pkkd"]


def best_lambda(val_accuracies):
    """The lambda of `{lambda: validation accuracy}` with the highest accuracy (ties: the
    smaller lambda)."""
    return max(val_accuracies, key=lambda w: (val_accuracies[w], -w))


def choose_lambda(args, print_fn, quiet):
    """Seed 0's PKKD arm per candidate; returns the lambda best on validation and the arms."""
    arms = {weight: train(args, 0, weight, quiet) for weight in args.lambdas}
    for weight, r in arms.items():
        print_fn(f"seed 0, lambda {weight:g}: validation {100 * r['val_accuracy']:.2f}%")
    best = best_lambda({weight: r["val_accuracy"] for weight, r in arms.items()})
    print_fn(f"lambda chosen on validation: {best:g}")
    return best, arms


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    if not args.val_split:
        raise SystemExit("--val-split must be > 0: lambda is chosen on the validation split.")
    start, quiet = paired_seeds.begin(args, (
        f"budget: adder_resnet20 width {args.width}, {args.train_limit} training images "
        f"({args.val_split:.0%} validation), test {args.test_limit or 'all'}, batch "
        f"{args.batch_size}, {args.epochs} epochs, SGD {args.lr} cosine, BN statistics "
        f"recomputed (student.precise_bn), {args.seeds} seeds, lambdas {args.lambdas}, "
        f"kernel offset {args.kernel_offset}"),
        print_fn)
    best, selection = choose_lambda(args, print_fn, quiet)
    per_seed = []
    for seed in range(args.seeds):
        arms = {"plain": train(args, seed, None, quiet), "pkkd": train(args, seed, best, quiet)}
        per_seed.append({"students": arms})
        acc = paired_seeds.accuracies(per_seed[-1])
        print_fn(f"seed {seed}: plain adder {acc['plain']:.2f} (validation "
                 f"{100 * arms['plain']['val_accuracy']:.2f}), pkkd {acc['pkkd']:.2f} (CNN "
                 f"teacher {100 * arms['pkkd']['teacher_accuracy']:.2f}): "
                 f"{acc['pkkd'] - acc['plain']:+.2f}")
    stats = paired_seeds.paired(per_seed, PAIRS)
    line = (f"pkkd (lambda={best:g}, chosen on validation; kernel offset {args.kernel_offset}) "
            "vs plain adder "
            f"{paired_seeds.versus(stats['pkkd_vs_plain'])}")
    record = {"args": vars(args), "lambda": best, "selection": selection, "seeds": per_seed,
              "line": line}
    paired_seeds.save(args, record, stats, start, print_fn)
    print_fn(line)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
