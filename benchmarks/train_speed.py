"""Training-step cost: binary vs float students, MAD and CMT-KD vs their students (issue 18).

Every model is trained on one synthetic CIFAR-shaped batch with `train_on_batch` (the
compiled train step of `fit`). The models are timed in turns: each repeat times `--steps`
steps of every model, one model after the other, and keeps each model's median; the figure
reported is the median over the repeats. Interleaving makes slow phases of a shared machine
hit every model alike, so the ratios hold better than the milliseconds. Each time is also
given in process CPU time, steadier than the wall time when other work shares the cores.

What is timed:
- `float` and `binary`: ResNet-20 in float and with 1-bit weights and activations
  (`--binary` scheme, the pipeline's zoo student), same batch.
- `mad (call)`: `MultiTeacherDistiller(student, teachers, feature_taps="auto")`, the binary
  student and four frozen ResNet-20 teachers at 32/8/4/2 bits, logits and the 3 stage taps,
  the teachers run by their plain `call` (as the distiller does).
- `mad (inference fn)`: the same with the teachers run by `inference_function` of
  benchmarks/teacher_inference.py (kernels quantized once, batch norm as constants,
  one trace), substituted for the distiller's teacher pass (`_extractors.run_teachers`)
  here until the distiller takes them itself.
- `mad logits only (teachers run)` and `(cached logits)`: MAD without feature taps
  (`feature_weight=0`, the loss chosen on validation in issue 17), its teachers run at
  every step, or their logits read from the inputs (`kerasbnn.distill.logits_cache`, for runs
  without augmentation: the teachers ran once over the data before training).
- a breakdown of the MAD step: student forward (training mode, with its taps), student
  backward (forward + gradients, minus the forward), teachers (plain and as inference
  functions, with and without XLA, and with batch norm folded into the float teacher's
  convs, which changes its outputs by ~1e-7 relative), and the rest (losses, adapters,
  fusion, optimizer) =
  MAD step - student step - teachers.
- `cmtkd`: `CollaborativeDistiller.from_zoo("resnet20")` (2-bit student, 4/6/8-bit
  teachers, HWGQ) vs its student alone; its teachers' share is the time of their own
  training steps (each teacher's `train_on_batch`), the rest is what remains.

Example:
    python benchmarks/train_speed.py --repeats 3
The last lines read like `binary vs float 1.05x` and `mad overhead 1.35x`. `--quick` runs
tiny sizes (for the test; its figures mean nothing).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasbnn import models  # noqa: E402
from kerasbnn.distill import (  # noqa: E402
    CollaborativeDistiller, MultiTeacherDistiller, teacher_logits, with_teacher_logits)
from kerasbnn.distill.taps import feature_extractor  # noqa: E402
from teacher_inference import inference_function  # noqa: E402

SHAPE = (32, 32, 3)
CLASSES = 10


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=_loss())
    return model


def _student(bits, binary, seed=0):
    keras.utils.set_random_seed(seed)
    return models.resnet20(SHAPE, CLASSES, bits=bits, binary=binary)


def step_timer(model, x, y):
    """One training step of `model` (synchronous: the logs come back as numbers)."""
    return lambda: model.train_on_batch(x, y)


def function_timer(fn, *args):
    """One call of the traced `fn`, waited for."""
    traced = tf.function(fn)

    def run():
        outputs = traced(*args)
        for value in tf.nest.flatten(outputs):
            value.numpy()

    return run


def interleaved(timers, steps, warmup, repeats):
    """`{name: (wall, cpu)}`: medians over repeats of the median step's wall and process CPU
    time, the models timed in turns. On a shared machine the CPU time (all threads of this
    process) moves less than the wall time, which includes waiting for the cores."""
    for run in timers.values():
        for _ in range(warmup):
            run()
    walls = {name: [] for name in timers}
    cpus = {name: [] for name in timers}
    for _ in range(repeats):
        for name, run in timers.items():
            wall, cpu = [], []
            for _ in range(steps):
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            walls[name].append(statistics.median(wall))
            cpus[name].append(statistics.median(cpu))
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name]))
            for name in timers}


def teacher_functions(distiller, **options):
    """The distiller's teachers as inference functions with its teacher-side taps."""
    taps = [t for _, t in distiller.feature_taps]
    return [inference_function(t, taps, **options) for t in distiller.teachers]


def teacher_calls(distiller):
    """The teachers' plain `call`s with the distiller's teacher-side taps, in inference mode."""
    extractors = [feature_extractor(t, distiller.teacher_taps) for t in distiller.teachers]
    return lambda x: [e(x, training=False) for e in extractors]


def use_inference_functions(distiller, functions):
    """Makes `distiller` run its teachers through `functions` (same outputs, same keys)."""
    distiller._extractors.run_teachers = lambda x, training: [f(x) for f in functions]
    return distiller


def student_passes(distiller, x, y):
    """Timers of the student's forward and forward + backward inside the distiller."""
    student = distiller.student
    extractor = feature_extractor(student, distiller.student_taps)
    loss = _loss()

    def forward(x):
        return extractor(x, training=True)

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            outputs = extractor(x, training=True)
            value = loss(y, outputs["logits"])
            value += sum(tf.reduce_mean(v) for k, v in outputs.items() if k != "logits")
        return tape.gradient(value, student.trainable_variables)

    return function_timer(forward, x), function_timer(forward_backward, x, y)


def _split(timings):
    return ({k: wall for k, (wall, _) in timings.items()},
            {k: cpu for k, (_, cpu) in timings.items()})


def ms(seconds):
    return f"{1000 * seconds:8.1f} ms"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model and repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (>= 3)")
    parser.add_argument("--binary", default="dorefa", help="binary scheme of the student")
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 8, 4, 2],
                        help="MAD teachers' bit widths")
    parser.add_argument("--no-cmtkd", action="store_true", help="skip the CMT-KD figures")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (batch 4, 1 step, 1 warmup) for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warmup = 4, 1, 1
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def _mad(student, teachers, **kwargs):
    """A compiled `MultiTeacherDistiller` of `student` and `teachers`."""
    distiller = MultiTeacherDistiller(student, teachers, **kwargs)
    distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
    return distiller


def mad_timers(args, x, y):
    """The timers of the students, of MAD in its variants and of the MAD step's parts."""
    mad_student = _student(1, args.binary)
    mad_teachers = [models.resnet20(SHAPE, CLASSES, bits=b, name=f"resnet20_{b}bit")
                    for b in args.bits]
    mad_call = _mad(mad_student, mad_teachers, feature_taps="auto")
    mad_fast = MultiTeacherDistiller(mad_student, mad_teachers, feature_taps="auto")
    fast = teacher_functions(mad_fast)
    use_inference_functions(mad_fast, fast)
    mad_fast.compile(optimizer=keras.optimizers.Adam(2e-3))
    mad_logits = _mad(mad_student, mad_teachers, feature_taps=None, feature_weight=0.0)
    mad_cached = _mad(mad_student, mad_teachers, feature_taps=None, feature_weight=0.0)
    cached_x = with_teacher_logits(x, tf.constant(teacher_logits(mad_teachers, x.numpy())))
    fast_jit = teacher_functions(mad_fast, jit_compile=True)
    fast_folded = teacher_functions(mad_fast, fold_batch_norm="auto")
    forward, forward_backward = student_passes(mad_call, x, y)
    return {
        "float": step_timer(_compiled(_student(32, args.binary)), x, y),
        "binary": step_timer(_compiled(_student(1, args.binary)), x, y),
        "mad (call)": step_timer(mad_call, x, y),
        "mad (inference fn)": step_timer(mad_fast, x, y),
        "mad logits only (teachers run)": step_timer(mad_logits, x, y),
        "mad logits only (cached logits)": step_timer(mad_cached, cached_x, y),
        "student forward": forward,
        "student forward+backward": forward_backward,
        "teachers (call)": function_timer(teacher_calls(mad_call), x),
        "teachers (inference fn)": function_timer(lambda x: [f(x) for f in fast], x),
        "teachers (inference fn, XLA)": function_timer(lambda x: [f(x) for f in fast_jit], x),
        "teachers (inference fn, BN folded)": function_timer(
            lambda x: [f(x) for f in fast_folded], x),
    }


def print_breakdown(result, cpu):
    """Each timer's median, and the MAD step split into its parts (wall and CPU)."""
    for name, value in result.items():
        print(f"{name:36s} {ms(value)}   cpu {ms(cpu[name])}")
    for label, t in (("wall", result), ("cpu", cpu)):
        backward = t["student forward+backward"] - t["student forward"]
        rest = t["mad (inference fn)"] - t["binary"] - t["teachers (inference fn)"]
        print(f"breakdown of the MAD step (inference-fn teachers), {label} ms: "
              f"student forward {1000 * t['student forward']:.1f}, "
              f"student backward {1000 * backward:.1f}, "
              f"optimizer and the rest of the student step "
              f"{1000 * (t['binary'] - t['student forward+backward']):.1f}, "
              f"teachers {1000 * t['teachers (inference fn)']:.1f}, "
              f"losses/adapters/fusion {1000 * rest:.1f}")


def cmtkd_line(x, y, times):
    """`cmtkd overhead N.NNx: teachers' training N.NNx, the rest N.NNx` (CMT-KD's step against
    its 2-bit student alone; its 4/6/8-bit HWGQ teachers' own training steps timed apart)."""
    keras.utils.set_random_seed(0)
    cmtkd = CollaborativeDistiller.from_zoo("resnet20", SHAPE, CLASSES)
    cmtkd.compile(optimizer=keras.optimizers.Adam(2e-3))
    keras.utils.set_random_seed(0)
    alone = _compiled(models.resnet20(SHAPE, CLASSES, bits=2, quantizer="hwgq"))
    cmtkd_teachers = [
        _compiled(models.resnet20(SHAPE, CLASSES, bits=b, quantizer="hwgq",
                                  name=f"cmtkd_teacher_{b}bit"))
        for b in (4, 6, 8)
    ]
    timers = {"cmtkd": step_timer(cmtkd, x, y), "cmtkd student alone": step_timer(alone, x, y)}
    timers.update({t.name: step_timer(t, x, y) for t in cmtkd_teachers})
    cmt, cmt_cpu = _split(times(timers))
    for name, value in cmt.items():
        print(f"{name:36s} {ms(value)}   cpu {ms(cmt_cpu[name])}")
    own = sum(cmt[t.name] for t in cmtkd_teachers)
    base = cmt["cmtkd student alone"]
    rest = cmt["cmtkd"] - own
    return (f"cmtkd overhead {cmt['cmtkd'] / base:.2f}x: teachers' training "
            f"{own / base:.2f}x, the rest {rest / base:.2f}x")


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch_size, *SHAPE)).astype("float32"))
    y = tf.constant(rng.integers(0, CLASSES, size=(args.batch_size,)).astype("int32"))
    times = lambda timers: interleaved(timers, args.steps, args.warmup, args.repeats)  # noqa: E731
    print(f"batch {args.batch_size}, {args.steps} steps x {args.repeats} interleaved repeats "
          f"(medians), cpu threads {os.cpu_count()}, binary scheme {args.binary!r}")
    result, cpu = _split(times(mad_timers(args, x, y)))
    print_breakdown(result, cpu)
    cmtkd = None if args.no_cmtkd else cmtkd_line(x, y, times)
    student_step = result["binary"]
    teachers_time = result["teachers (inference fn)"]
    print(f"teachers: inference fn vs call {teachers_time / result['teachers (call)']:.2f}x, "
          f"XLA vs plain {result['teachers (inference fn, XLA)'] / teachers_time:.2f}x, "
          f"BN folded vs not {result['teachers (inference fn, BN folded)'] / teachers_time:.2f}x")
    print(f"mad (call) overhead {result['mad (call)'] / student_step:.2f}x")
    print(f"cpu time: binary vs float {cpu['binary'] / cpu['float']:.2f}x, mad overhead "
          f"{cpu['mad (inference fn)'] / cpu['binary']:.2f}x, mad (call) overhead "
          f"{cpu['mad (call)'] / cpu['binary']:.2f}x")
    if cmtkd:
        print(cmtkd)
    print(f"mad overhead, logits only: teachers run "
          f"{result['mad logits only (teachers run)'] / student_step:.2f}x, cached teacher logits "
          f"{result['mad logits only (cached logits)'] / student_step:.2f}x")
    print(f"binary vs float {result['binary'] / result['float']:.2f}x")
    print(f"mad overhead {result['mad (inference fn)'] / student_step:.2f}x")


if __name__ == "__main__":
    main()
