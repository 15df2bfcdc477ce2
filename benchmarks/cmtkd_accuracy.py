"""Does CMT-KD beat the student alone and the average teacher? Paired seeds through the pipeline.

Every seed runs the pipeline's comparison (`kerasbnn.pipeline.run_compare`, i.e.
`distill.compare` without conversion) with three arms on the same data and seed, as CMT-KD's
Tables 1-2 (Zhao et al. 2022, §4.2) compare them:

- `none` ("alone"): the binary student with cross-entropy only;
- `average`: the paper's "average teacher" baseline (§4.2): the 4/6/8-bit HWGQ teachers are
  trained separately, before the student (the pipeline's teachers: a float teacher first, each
  k-bit one made from it and fine-tuned), and the student learns by plain KD from their
  averaged softmax outputs, with equal weights (`kerasbnn.methods.average`);
- `cmtkd`: CMT-KD, its 4/6/8-bit teachers trained with the student, collaboratively, inside the
  student's epochs (`kerasbnn.methods.cmtkd`, `CollaborativeDistiller` defaults).

The students are the pipeline's binary student (ResNet-20 at 1 bit, `student.binary`), not the
paper's W2A2 one: the three arms train the same network, and start from the same weights
(`kerasbnn.comparison`): here Keras' initialization (`student.init: random`; with `float` every
arm, cmtkd's student and teachers too, would start from the float teacher). The `average` teachers are trained once (`teachers.seed=0`, cached
under `--root`) and loaded by every seed; nothing is chosen on a validation split (none by
default, `--val-split` to hold one out), the reported accuracy is the test split's, after the
pipeline recomputes every student's BatchNorm statistics (`student.precise_bn`; the
moving averages are in each result's `accuracy_moving_stats`). Paired
seeds: within a seed every arm sees the same batches (none and average also start from the same
weights), so the per-seed differences are the evidence: the script prints them, their median and
win counts, writes `benchmarks/results/cmtkd_paired.json` (or `--out`), and its last line reads
like `cmtkd vs alone +N.N pt (wins k/5), vs average +N.N pt (wins k/5)`. `--set distill.KEY=VALUE`
changes the `average` arm's KD loss (e.g. `distill.temperature=4`) or, as `distill.options`,
cmtkd's settings.

`benchmarks/results/cmtkd_accuracy.json` holds the results of this script's earlier arms
(alone, kd_float, average, cmtkd, W1/A2), trained outside the pipeline: its `average` arm was a
`CollaborativeDistiller` with pi fixed at 1/3, teachers trained jointly with the student, which
is not the paper's baseline. Step times of the distillers are `benchmarks/train_speed.py`'s.

Budget (defaults): ResNet-20 at width 0.5, 20,000 training images, float teacher 8 epochs,
4/6/8-bit HWGQ teachers fine-tuned 2 epochs, students 4 epochs, 5 seeds: about 1.5 h on 2 idle
cores (estimated, not timed: at this budget distill_evidence.json's student alone took about
140 s a seed, cmtkd's step is about 4x the student alone's, average reads cached teacher
logits). A finished seed is reused when the script runs again with the same options
(`--resume` of the pipeline).

    python benchmarks/cmtkd_accuracy.py            # the evidence run
    python benchmarks/cmtkd_accuracy.py --quick    # a smoke run of a few minutes
"""

import argparse
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # paired_seeds, when imported

import paired_seeds  # noqa: E402

ARMS = ("none", "average", "cmtkd")
DEFAULTS = {"seeds": 5, "width": 0.5, "train_limit": 20000, "test_limit": None, "val_split": None,
            "batch_size": 128, "float_epochs": 8, "teacher_epochs": 2, "epochs": 4,
            "bits": "4,6,8", "lr": 2e-3, "root": "runs/cmtkd_accuracy"}
QUICK = {"seeds": 2, "width": 0.25, "train_limit": 512, "test_limit": 256, "batch_size": 64,
         "float_epochs": 1, "teacher_epochs": 1, "epochs": 1}
#: The paired differences: `name: (arm, base)`.
PAIRS = {"cmtkd_vs_alone": ("cmtkd", "none"), "cmtkd_vs_average": ("cmtkd", "average"),
         "average_vs_alone": ("average", "none")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired_seeds.add_arguments(parser, DEFAULTS, QUICK, "cmtkd_paired.json")
    return paired_seeds.parse(parser, argv, QUICK)


def base_config(args, seed):
    """The pipeline config of one seed: the paper's HWGQ teachers, students from random init."""
    return paired_seeds.base_config(args, seed, arms=ARMS, quantizer="hwgq", init="random")


#: Per-seed paired differences (points), their medians and win counts.
summary = functools.partial(paired_seeds.paired, pairs=PAIRS)
#: The last line.
final_line = functools.partial(paired_seeds.final_line, arm="cmtkd",
                               bases=[("alone", "cmtkd_vs_alone"), ("average", "cmtkd_vs_average")])


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    start, quiet = paired_seeds.begin(
        args, paired_seeds.budget_line(args, "HWGQ") + "; students from random init", print_fn)
    per_seed = []
    for seed in range(args.seeds):
        result = paired_seeds.compare(base_config(args, seed), quiet)
        if seed == 0:
            for bits, r in result["teachers"].items():
                print_fn(f"teacher {bits:>2}-bit: test {100 * r['accuracy']:.2f}%")
        per_seed.append(result)
        acc = paired_seeds.accuracies(result)
        print_fn(f"seed {seed}: alone {acc['none']:.2f}, average {acc['average']:.2f}, cmtkd "
                 f"{acc['cmtkd']:.2f}: cmtkd - alone {acc['cmtkd'] - acc['none']:+.2f}, "
                 f"cmtkd - average {acc['cmtkd'] - acc['average']:+.2f}")
    stats = summary(per_seed)
    record = {"args": vars(args), "arms": list(ARMS), "seeds": per_seed, "line": final_line(stats)}
    paired_seeds.save(args, record, stats, start, print_fn)
    print_fn(record["line"])
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
