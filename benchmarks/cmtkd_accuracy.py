"""CMT-KD on Fashion-MNIST: accuracy of a low-bit student under an equal budget, and step time.

Methods (each trains the student for `--epochs` epochs on the same data, per seed):
- `alone`: the 2-bit student with cross-entropy only;
- `kd_float`: classic KD (T^2-scaled KL at `--temperature`) from a float teacher of the
  same architecture, pre-trained for `--teacher-epochs` epochs (not counted in the budget,
  as in the paper's KD baseline) through `MultiTeacherDistiller` with one teacher;
- `average`: collaborative training with the teachers fused with equal weights (the
  paper's "average teacher" ablation);
- `cmtkd`: full CMT-KD (learned importance factors, attention loss, mutual learning);
- `w1a2_alone`, `w1a2_cmtkd`: the W1/A2 student alone and with CMT-KD (teachers 2/4/8-bit).

Student accuracy is reported per seed, then median and spread (min..max); the "teacher acc"
column is the combined teacher for the collaborative methods and the float teacher for
`kd_float`. Equal budget means the same epochs, batches and schedule for every student;
the collaborative methods train their teachers inside that budget. Step time is the median
wall time of a training step after the first `--warmup-steps` (graph tracing), measured
with a batch callback in each run; the overhead is relative to `alone` (same bits).

Example (tiny budget, to check it runs end to end):
    python benchmarks/cmtkd_accuracy.py --epochs 1 --seeds 1 --train-limit 512 \
        --test-limit 256 --width 0.25
The last line reads like `cmtkd +1.2 pt over alone, +0.4 pt over average (median of 3 seeds)`.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import kerasbnn  # noqa: E402
from kerasbnn import data, models  # noqa: E402
from kerasbnn.distill import CollaborativeDistiller, MultiTeacherDistiller  # noqa: E402
from step_timer import StepTimer  # noqa: E402

METHODS = ("alone", "kd_float", "average", "cmtkd", "w1a2_alone", "w1a2_cmtkd")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=10, help="student budget, equal for every method"
    )
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="float teacher pre-training (default: --epochs)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use the first N training images"
    )
    parser.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument(
        "--width", type=float, default=1.0, help="width_multiplier of the zoo model"
    )
    parser.add_argument("--quantizer", default="hwgq", choices=models.QUANTIZERS)
    parser.add_argument("--student-bits", type=int, default=2)
    parser.add_argument("--teacher-bits", default="4,6,8")
    parser.add_argument("--w1a2-teacher-bits", default="2,4,8")
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    parser.add_argument(
        "--lr", type=float, default=None, help="default: 2e-3 (adam) or 0.05 (sgd), cosine-decayed"
    )
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--pi-lr-scale", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train steps")
    parser.add_argument("--json", default=None, help="also write every result to this file")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
    args.teacher_bits = [int(b) for b in args.teacher_bits.split(",")]
    args.w1a2_teacher_bits = [int(b) for b in args.w1a2_teacher_bits.split(",")]
    if args.teacher_epochs is None:
        args.teacher_epochs = args.epochs
    if args.lr is None:
        args.lr = 2e-3 if args.optimizer == "adam" else 0.05
    return args


def optimizer(args, steps):
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(steps, 1))
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9)
    return keras.optimizers.Adam(schedule)


def build(args, bits, shape, classes):
    return models.get(args.model)(
        shape, classes, bits=bits, quantizer=args.quantizer, width_multiplier=args.width
    )


def accuracy(model, test, jit):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=loss, metrics=["accuracy"], jit_compile=jit)
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def train(model, train_ds, epochs, args, steps_per_epoch, jit):
    distiller = isinstance(model, (CollaborativeDistiller, MultiTeacherDistiller))
    loss = None if distiller else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer(args, epochs * steps_per_epoch), loss=loss, metrics=["accuracy"], jit_compile=jit
    )
    timer = StepTimer(args.warmup_steps)
    # kerasbnn.data already shuffles (seeded); Keras warns if asked to shuffle a Dataset.
    model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[timer], shuffle=False)
    return statistics.median(timer.times) if timer.times else float("nan")


def run_method(method, seed, args, train_ds, test_ds, shape, classes, steps):
    keras.utils.set_random_seed(seed)
    w1a2 = method.startswith("w1a2")
    student_bits = (1, 2) if w1a2 else args.student_bits
    teacher_bits = args.w1a2_teacher_bits if w1a2 else args.teacher_bits
    student = build(args, student_bits, shape, classes)
    result = {"method": method, "seed": seed}
    if method in ("alone", "w1a2_alone"):
        result["step_s"] = train(student, train_ds, args.epochs, args, steps, args.jit)
    elif method == "kd_float":
        teacher = build(args, 32, shape, classes)
        train(teacher, train_ds, args.teacher_epochs, args, steps, args.jit)
        result["teacher_acc"] = accuracy(teacher, test_ds, args.jit)
        distiller = MultiTeacherDistiller(
            student,
            [teacher],
            feature_taps=None,
            kl_weight=1.0,
            temperature=args.temperature,
            scale_by_temperature_squared=True,
        )
        result["step_s"] = train(distiller, train_ds, args.epochs, args, steps, args.jit)
    else:
        teachers = [build(args, b, shape, classes) for b in teacher_bits]
        distiller = CollaborativeDistiller(
            student,
            teachers,
            fusion="average" if method == "average" else "learned",
            temperature=args.temperature,
            fusion_lr_scale=args.pi_lr_scale,
        )
        result["step_s"] = train(distiller, train_ds, args.epochs, args, steps, args.jit)
        result["teacher_acc"] = float(
            distiller.evaluate(test_ds, verbose=0, return_dict=True)["teacher_accuracy"]
        )
        result["pi"] = {
            k: [round(float(v), 4) for v in w] for k, w in distiller.importances().items()
        }
    result["student_acc"] = accuracy(student, test_ds, args.jit)
    return result


def summarise(results, method, key):
    values = [r[key] for r in results if r["method"] == method and key in r]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def main(argv=None):
    args = parse_args(argv)
    info = data.info("fashion_mnist")
    shape, classes = tuple(info.input_shape), int(info.num_classes)
    n_train = args.train_limit or info.splits["train"]
    steps = -(-n_train // args.batch_size)
    print(
        f"kerasbnn {kerasbnn.__version__}, keras {keras.__version__}; "
        f"{args.model} width {args.width}, "
        f"{args.quantizer}, {n_train} train images, {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.optimizer} lr {args.lr}, seeds {args.seeds}",
        flush=True,
    )
    results = []
    for seed in range(args.seeds):
        train_ds = data.load(
            "fashion_mnist", "train", args.batch_size, seed=seed, limit=args.train_limit
        )
        test_ds = data.load("fashion_mnist", "test", args.batch_size, limit=args.test_limit)
        for method in args.methods:
            start = time.perf_counter()
            result = run_method(method, seed, args, train_ds, test_ds, shape, classes, steps)
            result["wall_s"] = round(time.perf_counter() - start, 1)
            results.append(result)
            print(json.dumps(result), flush=True)
    print(
        f"\n{'method':<12} {'student acc % (median [min..max])':<36} {'teacher acc %':<15} step ms"
    )
    for method in args.methods:
        acc = summarise(results, method, "student_acc")
        teacher = summarise(results, method, "teacher_acc")
        step = summarise(results, method, "step_s")
        teacher_text = f"{100 * teacher[0]:.2f}" if teacher else "-"
        acc_text = f"{100 * acc[0]:6.2f} [{100 * acc[1]:.2f}..{100 * acc[2]:.2f}]"
        print(f"{method:<12} {acc_text:<36} {teacher_text:<15} {1000 * step[0]:.0f}")
    for method, base in (
        ("cmtkd", "alone"),
        ("average", "alone"),
        ("kd_float", "alone"),
        ("w1a2_cmtkd", "w1a2_alone"),
    ):
        if method in args.methods and base in args.methods:
            ratio = summarise(results, method, "step_s")[0] / summarise(results, base, "step_s")[0]
            print(f"step-time overhead {method} vs {base}: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    if "cmtkd" in args.methods:
        cm = summarise(results, "cmtkd", "student_acc")[0]
        parts = [
            f"{100 * (cm - summarise(results, b, 'student_acc')[0]):+.1f} pt over {b}"
            for b in ("alone", "average", "kd_float")
            if b in args.methods
        ]
        print(
            f"cmtkd {', '.join(parts)} (median of {args.seeds} seed{'s' if args.seeds > 1 else ''})"
        )


if __name__ == "__main__":
    sys.exit(main())
