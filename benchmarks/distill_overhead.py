"""Per-step cost of multi-teacher distillation: `distiller.fit` vs `student.fit`, one run.

A binary ResNet-20 student (DoReFa scheme) and four frozen ResNet-20 teachers at
32/8/4/2 bits (zoo builders), logits plus the three stage taps with 1x1 adapters, the
same synthetic CIFAR-shaped batch for both. The step time is the median wall time of a
training step after `--warmup` steps (graph tracing), measured by a batch callback.

Example:
    python benchmarks/distill_overhead.py --steps 30 --batch-size 128
The last line reads like `overhead 1.75x`. On a shared machine timings are noisy: run
both models in the same invocation (as here) and compare medians.
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasbnn import models  # noqa: E402
from kerasbnn.distill import MultiTeacherDistiller  # noqa: E402
from step_timer import StepTimer  # noqa: E402


def timed_fit(model, dataset, steps, warmup):
    timer = StepTimer(warmup)
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=steps + warmup,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return statistics.median(timer.times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument(
        "--bits", type=int, nargs="+", default=[32, 8, 4, 2], help="teacher bit widths"
    )
    parser.add_argument("--logits-only", action="store_true", help="no feature taps")
    parser.add_argument(
        "--teacher-jit", action="store_true", help="XLA-compile the teachers' forward pass"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternate student/distiller runs")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch_size,)).astype("int32")
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()

    keras.utils.set_random_seed(0)
    student = models.resnet20((32, 32, 3), 10, bits=1, binary="dorefa")
    teachers = [
        models.resnet20((32, 32, 3), 10, bits=b, name=f"resnet20_{b}bit") for b in args.bits
    ]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    student.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=["accuracy"])
    distiller = MultiTeacherDistiller(
        student,
        teachers,
        feature_taps=None if args.logits_only else "auto",
        teacher_jit_compile=args.teacher_jit,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])

    student_times, distill_times = [], []
    for _ in range(args.repeats):
        student_times.append(timed_fit(student, dataset, args.steps, args.warmup))
        distill_times.append(timed_fit(distiller, dataset, args.steps, args.warmup))
    s, d = statistics.median(student_times), statistics.median(distill_times)
    print(
        f"teachers {args.bits}, taps {[t for t, _ in distiller.feature_taps]}, "
        f"batch {args.batch_size}, "
        f"teacher_jit {args.teacher_jit}, cpu threads {os.cpu_count()}"
    )
    print(f"student.fit    {1000 * s:.1f} ms/step (median of {args.steps} steps x {args.repeats})")
    print(f"distiller.fit  {1000 * d:.1f} ms/step")
    print(f"overhead {d / s:.2f}x")


if __name__ == "__main__":
    main()
