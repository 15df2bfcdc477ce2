"""MAD on Fashion-MNIST: does multi-bit adaptive distillation help a binary ResNet-20?

Methods, each training the same binary student (ResNet-20, DoReFa binary scheme) for
`--epochs` epochs per seed on the same data:
- `no_kd`: cross-entropy only (`student.fit`);
- `single_<b>`: one frozen teacher of b bits (KD + stage features with adapters, the
  same loss as MAD with M = 1);
- `average`: all teachers fused with equal fixed weights;
- `mad`: learned fusion (MAD).

Every run uses Adam at `--lr` with cosine decay to 0 over its epochs, so that short runs end
settled and seeds agree better. Teachers (ResNet-20 at `--bits`, DoReFa) are trained once for
`--teacher-epochs` and cached in `--cache-dir` (keyed by every option that changes them),
so later runs only train students. Test accuracy is reported per seed, with the median and the spread
(min..max) per method.

Example (tiny budget, only to check that it runs end to end):
    python benchmarks/distill_accuracy.py --epochs 1 --teacher-epochs 1 --seeds 1 \
        --train-limit 512 --test-limit 256 --width 0.25
The last line reads like `gain +1.8 pt over no-KD, +0.6 pt over best single teacher`.
"""

import argparse
import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from kerasbnn import data, models  # noqa: E402
from kerasbnn.distill import MultiTeacherDistiller  # noqa: E402


def ce_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(bits, args, name):
    kwargs = {"binary": "dorefa"} if bits == 1 else {}
    return models.resnet20(
        args.input_shape,
        args.num_classes,
        bits=bits,
        width_multiplier=args.width,
        name=name,
        **kwargs,
    )


def optimizer(args, epochs, train):
    """Adam with cosine decay over the whole run, so that short runs end settled."""
    steps = epochs * int(train.cardinality())
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps))


def datasets(args, seed):
    train = data.load("fashion_mnist", "train", args.batch_size, seed=seed, limit=args.train_limit)
    test = data.load("fashion_mnist", "test", args.batch_size, limit=args.test_limit)
    return train, test


def accuracy(model, test):
    model.compile(loss=ce_loss(), metrics=["accuracy"])
    return 100.0 * model.evaluate(test, verbose=0, return_dict=True)["accuracy"]


def teachers(args):
    """Trains (or loads from the cache) one teacher per bit width."""
    os.makedirs(args.cache_dir, exist_ok=True)
    result, accuracies = [], {}
    for bits in args.bits:
        keras.utils.set_random_seed(1000 + bits)
        teacher = build(bits, args, f"teacher_{bits}bit")
        key = (
            f"resnet20_{bits}bit_w{args.width}_e{args.teacher_epochs}"
            f"_n{args.train_limit}_lr{args.lr}_cosine"
        )
        path = os.path.join(args.cache_dir, key + ".weights.h5")
        train, test = datasets(args, seed=1000 + bits)
        if os.path.exists(path):
            teacher.load_weights(path)
        else:
            teacher.compile(optimizer=optimizer(args, args.teacher_epochs, train), loss=ce_loss())
            teacher.fit(train, epochs=args.teacher_epochs, verbose=args.verbose)
            teacher.save_weights(path)
        accuracies[bits] = accuracy(teacher, test)
        result.append(teacher)
    return result, accuracies


def train_student(method, all_teachers, args, seed):
    keras.utils.set_random_seed(seed)
    student = build(1, args, "student")
    train, test = datasets(args, seed)
    if method == "no_kd":
        student.compile(optimizer=optimizer(args, args.epochs, train), loss=ce_loss())
        student.fit(train, epochs=args.epochs, verbose=args.verbose)
        return accuracy(student, test)
    if method.startswith("single_"):
        chosen = [all_teachers[args.bits.index(int(method.split("_")[1]))]]
        fusion = "learned"
    else:
        chosen = all_teachers
        fusion = "average" if method == "average" else "learned"
    distiller = MultiTeacherDistiller(
        student,
        chosen,
        feature_taps=None if args.logits_only else "auto",
        fusion=fusion,
        kl_weight=args.kl_weight,
        feature_weight=args.feature_weight,
        temperature=args.temperature,
    )
    distiller.compile(optimizer=optimizer(args, args.epochs, train))
    distiller.fit(train, epochs=args.epochs, verbose=args.verbose)
    return accuracy(distiller.student, test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15, help="student epochs (equal budget)")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 8, 4, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--feature-weight", type=float, default=0.2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-20 width multiplier")
    parser.add_argument("--logits-only", action="store_true")
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use the first N training images"
    )
    parser.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of methods to run")
    parser.add_argument(
        "--cache-dir", default=os.path.expanduser("~/.cache/kerasbnn/distill_accuracy")
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    info = data.info("fashion_mnist")
    args.input_shape, args.num_classes = info.input_shape, info.num_classes

    all_teachers, teacher_acc = teachers(args)
    methods = args.methods or ["no_kd", *[f"single_{b}" for b in args.bits], "average", "mad"]
    teacher_line = "teachers: " + ", ".join(f"{b}-bit {a:.2f}%" for b, a in teacher_acc.items())
    print(teacher_line, flush=True)
    results = {m: [] for m in methods}
    for seed in range(args.seeds):
        for method in methods:
            results[method].append(train_student(method, all_teachers, args, seed))
            print(f"seed {seed} {method}: {results[method][-1]:.2f}%", flush=True)

    print(teacher_line)
    print(f"{'method':<12} {'median':>7} {'min':>7} {'max':>7}  per seed")
    for method, accs in results.items():
        print(
            f"{method:<12} {statistics.median(accs):7.2f} {min(accs):7.2f} {max(accs):7.2f}  "
            + " ".join(f"{a:.2f}" for a in accs)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": {k: v for k, v in vars(args).items()},
                    "teachers": teacher_acc,
                    "results": results,
                },
                f,
                indent=1,
                default=str,
            )
    median = {m: statistics.median(a) for m, a in results.items()}
    singles = [m for m in median if m.startswith("single_")]
    if "mad" in median and "no_kd" in median and singles:
        best = max(singles, key=median.get)
        print(f"mad vs float teacher: {median['mad'] - teacher_acc.get(32, float('nan')):+.1f} pt")
        print(
            f"gain {median['mad'] - median['no_kd']:+.1f} pt over no-KD, "
            f"{median['mad'] - median[best]:+.1f} pt over best single teacher"
        )


if __name__ == "__main__":
    main()
