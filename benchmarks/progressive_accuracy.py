"""Block-wise distillation (thesis methods I, II, III) vs plain training, and PKKD vs a plain adder net.

Fashion-MNIST through `kerasbnn.data.load`. Part 1: a float ResNet-20 teacher (trained once per
seed and cached in --out-dir), then a binary ResNet-20 student (XNOR++ factorised scaling,
double-ReLU blocks) trained by each method with the same total epochs
(3 stages x --epochs-per-stage + --final-epochs; "plain" = CE for all of them from the teacher's
weights). Part 2: adder ResNet-20 trained alone and with PKKD for --pkkd-epochs (SGD with
cosine decay, AdderNet's recipe: the learning rate reaches 0 at the last step), each student's
BatchNormalization statistics recalibrated on --pkkd-recalibration-steps training batches (the
accuracy with the moving averages of training is printed beside it).

Medians over seeds with the min..max spread; the last lines say whether method I's advantage
over plain training shows, and the PKKD gain.

Example (tiny budget, what runs on a shared 2-core machine):
    python benchmarks/progressive_accuracy.py --seeds 1 --train-limit 256 --test-limit 256 \
        --teacher-epochs 1 --epochs-per-stage 1 --final-epochs 1 --pkkd-epochs 1
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbnn.distill.pkkd import run_pkkd  # noqa: E402
from kerasbnn.distill.progressive import RUN_DEFAULTS, run_progressive  # noqa: E402

METHODS = ("I", "II", "III", "plain")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--train-limit", type=int, default=None, help="first N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="first N test images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0,
                        help="width_multiplier of every network, the adder ones included (0.5 halves the channels)")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--epochs-per-stage", type=int, default=2)
    parser.add_argument("--final-epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--feature-weight", type=float, default=0.4)
    parser.add_argument("--pkkd-epochs", type=int, default=10, help="0 skips the PKKD part")
    parser.add_argument("--pkkd-blocks", type=int, default=3, help="blocks per stage of the adder ResNet")
    parser.add_argument("--pkkd-feature-weights", type=float, nargs="+", default=[1.0],
                        help="one PKKD arm per feature-loss weight (lambda), each against the same plain adder net")
    parser.add_argument("--pkkd-recalibration-steps", type=int, default=100,
                        help="training batches for the adder nets' BatchNormalization recalibration "
                             "(0: off)")
    parser.add_argument("--skip-progressive", action="store_true")
    parser.add_argument("--out-dir", default="runs/progressive_accuracy", help="teacher cache and results")
    parser.add_argument("--verbose", type=int, default=0)
    return parser.parse_args(argv)


def arm_label(feature_weight):
    """Name of a PKKD benchmark arm: the plain adder net (None) or PKKD with lambda = weight."""
    return "plain" if feature_weight is None else f"PKKD lambda={feature_weight:g}"


def summarise(label, values):
    values = [100 * v for v in values]
    med = statistics.median(values)
    return med, f"{label:<22} {med:6.2f}  [{min(values):6.2f} .. {max(values):6.2f}]  n={len(values)}"


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    seeds = range(args.seeds)
    results = {"args": vars(args), "progressive": [], "pkkd": []}
    common = dict(train_limit=args.train_limit, test_limit=args.test_limit, batch_size=args.batch_size,
                  verbose=args.verbose)
    width = {"width_multiplier": args.width}
    if not args.skip_progressive:
        for seed in seeds:
            for method in args.methods:
                start = time.time()
                run = run_progressive(dict(
                    common, method=method, seed=seed, teacher_epochs=args.teacher_epochs,
                    teacher_kwargs=width, student_kwargs={**RUN_DEFAULTS["student_kwargs"], **width},
                    teacher_path=os.path.join(
                        args.out_dir,
                        f"teacher_seed{seed}_{args.train_limit}_{args.teacher_epochs}_w{args.width}.keras",
                    ),
                    epochs_per_stage=args.epochs_per_stage, final_epochs=args.final_epochs,
                    learning_rate=args.learning_rate, feature_weight=args.feature_weight,
                ))
                run["seconds"] = time.time() - start
                print(f"seed {seed} method {method:<5} test acc {100 * run['test_accuracy']:.2f} "
                      f"(teacher {100 * run['teacher_accuracy']:.2f}, {run['total_epochs']} epochs, "
                      f"{run['seconds']:.0f} s)", flush=True)
                results["progressive"].append({k: v for k, v in run.items() if k != "phases"})
    pkkd_arms = [None, *args.pkkd_feature_weights] if args.pkkd_epochs else []
    for seed in seeds:
        for weight in pkkd_arms:
            start = time.time()
            extra = {} if weight is None else {"distiller_kwargs": {"feature_weight": weight}}
            run = run_pkkd(dict(common, pkkd=weight is not None, seed=seed, epochs=args.pkkd_epochs,
                                blocks_per_stage=args.pkkd_blocks, width_multiplier=args.width,
                                bn_recalibration_steps=args.pkkd_recalibration_steps, **extra))
            run["seconds"] = time.time() - start
            run["feature_weight"] = weight
            teacher = "" if weight is None else f", CNN teacher {100 * run['teacher_accuracy']:.2f}"
            moving = run["test_accuracy_moving_stats"]
            moving = "" if moving is None else f" (moving BN statistics {100 * moving:.2f})"
            print(f"seed {seed} adder {arm_label(weight):<14} test acc "
                  f"{100 * run['test_accuracy']:.2f}{moving}{teacher} ({run['seconds']:.0f} s)", flush=True)
            results["pkkd"].append({k: v for k, v in run.items() if k != "history"})

    print("\nFashion-MNIST test accuracy (%), median [min .. max] over seeds")
    medians = {}
    for method in args.methods if not args.skip_progressive else ():
        values = [r["test_accuracy"] for r in results["progressive"] if r["method"] == method]
        medians[method], line = summarise(f"binary ResNet-20 {method}", values)
        print(line)
    if results["progressive"]:
        per_seed = {r["seed"]: r["teacher_accuracy"] for r in results["progressive"]}
        print(summarise("float teacher", list(per_seed.values()))[1])
    for weight in pkkd_arms:
        values = [r["test_accuracy"] for r in results["pkkd"] if r["feature_weight"] == weight]
        medians[arm_label(weight)], line = summarise(f"adder {arm_label(weight)}", values)
        print(line)
        moving = [r["test_accuracy_moving_stats"] for r in results["pkkd"]
                  if r["feature_weight"] == weight]
        if None not in moving:
            print(summarise("  moving BN statistics", moving)[1])
    if results["pkkd"] and any(r["pkkd"] for r in results["pkkd"]):
        teachers = [r["teacher_accuracy"] for r in results["pkkd"] if r["pkkd"]]
        print(summarise("CNN teacher (PKKD)", teachers)[1])
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    if "I" in medians and "plain" in medians:
        gain = medians["I"] - medians["plain"]
        best = max((m for m in medians if m in METHODS), key=medians.get)
        print(f"method I {gain:+.2f} pt over plain training; best method: {best}; "
              f"advantage {'shows' if gain > 0 else 'does not show'} at this budget")
    for weight in args.pkkd_feature_weights if args.pkkd_epochs else ():
        print(f"{arm_label(weight)} {medians[arm_label(weight)] - medians[arm_label(None)]:+.2f} pt over "
              "the plain adder network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
