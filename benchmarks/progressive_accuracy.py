"""Block-wise distillation (thesis methods I, II, III) vs plain training, and PKKD vs a plain adder net.

Every arm is one `kerasbnn.pipeline.run_method` run on Fashion-MNIST (its own run directory
under --out-dir, so an interrupted benchmark resumes). Part 1: the pipeline's float ResNet-20
teacher (trained once per seed, copied into the other arms' run directories), then a binary
ResNet-20 student (XNOR++, double-ReLU blocks) trained by each method (`progressive` with
`variant` I, II, III) with the same total epochs (3 stages x --epochs-per-stage +
--final-epochs; "plain" = the `none` method, CE from scratch, for all of them). Part 2: the
adder ResNet-20 trained alone and with PKKD (`pkkd`) for --pkkd-epochs (`optimizer: sgd`,
AdderNet's recipe, cosine decay to 0), each student's BatchNormalization statistics recalibrated
on --pkkd-recalibration-steps training batches (the accuracy with the moving averages of
training is printed beside it).

Medians over seeds with the min..max spread; the last lines say whether method I's advantage
over plain training shows, and the PKKD gain.

Example (tiny budget, what runs on a shared 2-core machine):
    python benchmarks/progressive_accuracy.py --seeds 1 --train-limit 256 --test-limit 256 \
        --teacher-epochs 1 --epochs-per-stage 1 --final-epochs 1 --pkkd-epochs 1
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbnn import config as run_config  # noqa: E402
from kerasbnn import pipeline  # noqa: E402
from kerasbnn.run_dir import RunDir  # noqa: E402

METHODS = ("I", "II", "III", "plain")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--train-limit", type=int, default=None, help="first N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="first N test images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0,
                        help="width_multiplier of the adder networks (0.5 halves the channels; the "
                             "pipeline's ResNet-20 has full width)")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--epochs-per-stage", type=int, default=2)
    parser.add_argument("--final-epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--feature-weight", type=float, default=0.4)
    parser.add_argument("--pkkd-epochs", type=int, default=10, help="0 skips the PKKD part")
    parser.add_argument("--pkkd-learning-rate", type=float, default=0.05,
                        help="SGD's initial rate (momentum 0.9, cosine decay to 0)")
    parser.add_argument("--pkkd-blocks", type=int, default=3, help="blocks per stage of the adder ResNet")
    parser.add_argument("--pkkd-feature-weights", type=float, nargs="+", default=[1.0],
                        help="one PKKD arm per feature-loss weight (lambda), each against the same plain adder net")
    parser.add_argument("--pkkd-recalibration-steps", type=int, default=100,
                        help="training batches for the adder nets' BatchNormalization recalibration "
                             "(0: off)")
    parser.add_argument("--skip-progressive", action="store_true")
    parser.add_argument("--out-dir", default="runs/progressive_accuracy", help="teacher cache and results")
    return parser.parse_args(argv)


def arm_label(feature_weight):
    """Name of a PKKD benchmark arm: the plain adder net (None) or PKKD with lambda = weight."""
    return "plain" if feature_weight is None else f"PKKD lambda={feature_weight:g}"


def summarise(label, values):
    values = [100 * v for v in values]
    med = statistics.median(values)
    return med, f"{label:<22} {med:6.2f}  [{min(values):6.2f} .. {max(values):6.2f}]  n={len(values)}"


def _config(args, seed, run_dir, method, student, options, **sections):
    """A `RunConfig` of one arm: `student` and the other sections as dicts."""
    d = {"name": "fashion_mnist", "batch_size": args.batch_size, "train_limit": args.train_limit,
         "val_limit": args.test_limit}
    values = {"run_dir": run_dir, "seed": seed, "data": d, "student": student,
              "distill": {"method": method, "options": options}, **sections}
    return run_config.from_dict(values)


def _progressive(args, seed, method):
    """One arm of part 1: `progressive` (variant `method`) or `none` ("plain")."""
    stages = 3
    total = stages * args.epochs_per_stage + args.final_epochs
    teachers = {"bits": [32], "epochs": args.teacher_epochs, "learning_rate": args.learning_rate}
    run_dir = os.path.join(args.out_dir, f"seed{seed}_{method}")
    student = {"binary": "xnorpp", "epochs": total, "learning_rate": args.learning_rate}
    if method == "plain":
        config = _config(args, seed, run_dir, "none", student, {})
    else:
        options = {"variant": method, "epochs_per_stage": args.epochs_per_stage,
                   "feature_weight": args.feature_weight}
        config = _config(args, seed, run_dir, "progressive",
                         {**student, "epochs": args.final_epochs}, options, teachers=teachers)
        cached = os.path.join(args.out_dir, f"seed{seed}_I", "teachers", "w32a32.keras")
        target = os.path.join(run_dir, "teachers", "w32a32.keras")
        if os.path.exists(cached) and not os.path.exists(target):  # one teacher per seed
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(cached, target)
    result = pipeline.run_method(config, resume=os.path.exists(run_dir))
    if method != "plain":
        teacher = RunDir(run_dir).read_json("teacher_w32a32")
        result["teacher_accuracy"] = (teacher or {}).get("accuracy")
    return {**result, "variant": method, "seed": seed, "total_epochs": total}


def _pkkd(args, seed, weight):
    """One arm of part 2: the adder network alone (weight None) or PKKD with lambda = weight."""
    options = {"pkkd": weight is not None, "blocks_per_stage": args.pkkd_blocks,
               "width_multiplier": args.width, "optimizer": "sgd", "feature_weight": weight or 0.0,
               "bn_recalibration_steps": args.pkkd_recalibration_steps}
    run_dir = os.path.join(args.out_dir, f"seed{seed}_pkkd_{arm_label(weight).replace(' ', '_')}")
    student = {"epochs": args.pkkd_epochs, "learning_rate": args.pkkd_learning_rate}
    config = _config(args, seed, run_dir, "pkkd", student, options)
    result = pipeline.run_method(config, resume=os.path.exists(run_dir))
    return {**result, "feature_weight": weight, "seed": seed}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    seeds = range(args.seeds)
    results = {"args": vars(args), "progressive": [], "pkkd": []}
    if not args.skip_progressive:
        for seed in seeds:
            for method in sorted(args.methods, key=lambda m: m != "I"):  # I trains the teacher
                start = time.time()
                run = _progressive(args, seed, method)
                teacher = run.get("teacher_accuracy")
                teacher = "" if teacher is None else f" (teacher {100 * teacher:.2f})"
                print(f"seed {seed} method {method:<5} test acc {100 * run['accuracy']:.2f}"
                      f"{teacher}, {run['total_epochs']} epochs, {time.time() - start:.0f} s",
                      flush=True)
                results["progressive"].append(run)
    pkkd_arms = [None, *args.pkkd_feature_weights] if args.pkkd_epochs else []
    for seed in seeds:
        for weight in pkkd_arms:
            start = time.time()
            run = _pkkd(args, seed, weight)
            teacher = "" if weight is None else f", CNN teacher {100 * run['teacher_accuracy']:.2f}"
            moving = run["accuracy_moving_stats"]
            moving = "" if moving is None else f" (moving BN statistics {100 * moving:.2f})"
            print(f"seed {seed} adder {arm_label(weight):<14} test acc "
                  f"{100 * run['accuracy']:.2f}{moving}{teacher} ({time.time() - start:.0f} s)",
                  flush=True)
            results["pkkd"].append(run)

    print("\nFashion-MNIST test accuracy (%), median [min .. max] over seeds")
    medians = {}
    for method in args.methods if not args.skip_progressive else ():
        values = [r["accuracy"] for r in results["progressive"] if r["variant"] == method]
        medians[method], line = summarise(f"binary ResNet-20 {method}", values)
        print(line)
    if results["progressive"]:
        per_seed = {r["seed"]: r["teacher_accuracy"] for r in results["progressive"]
                    if r.get("teacher_accuracy") is not None}
        print(summarise("float teacher", list(per_seed.values()))[1])
    for weight in pkkd_arms:
        values = [r["accuracy"] for r in results["pkkd"] if r["feature_weight"] == weight]
        medians[arm_label(weight)], line = summarise(f"adder {arm_label(weight)}", values)
        print(line)
        moving = [r["accuracy_moving_stats"] for r in results["pkkd"]
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
