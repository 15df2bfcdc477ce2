"""The whole job in one call: teachers -> distilled binary student -> LCE -> report.

`kerasbnn pipeline --config run.yaml` (and `make demo`) run `run_pipeline`. Each step writes
its artefact atomically into the run directory and is skipped when that artefact exists,
so `--resume` after a crash or a kill continues where the run stopped (and a step that
was cut mid-training continues from its last finished epoch through
`keras.callbacks.BackupAndRestore`).

Run directory:
    config.yaml                  the config used
    teachers/w<b>a<b>.keras      the trained teachers
    students/{mad,plain}.keras   binary students with and without distillation
    tflite/*.tflite              LCE flatbuffers (float teacher, both students)
    results/*.json               per-step metrics, conversion reports, latencies
    logs/*.csv, tensorboard/     training logs
    plots/*.png, report.md       the report
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from kerasbnn import config as run_config
from kerasbnn import data as datasets
from kerasbnn import distribution
from kerasbnn import models
from kerasbnn.distill import DeltaHistory, MultiTeacherDistiller
from kerasbnn.export import lce_convert, measure_latency
from kerasbnn.training import fit_resumable, save_atomically
from kerasbnn.utils.summary import summary

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


METHODS = ("mad", "kd", "cmtkd", "progressive", "pkkd")


class RunDirectoryError(ValueError):
    """The run directory holds another run and `resume` was not asked for."""


class RunDir:
    """Paths and atomic JSON results inside one run directory."""

    def __init__(self, root, is_chief=True):
        self.root = os.fspath(root)
        self.is_chief = is_chief  # False: a multi-worker run's other worker, which only trains

    def path(self, *parts):
        path = os.path.join(self.root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def write_json(self, name, value):
        path = self.path("results", f"{name}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(value, f, indent=2, default=float)
        os.replace(path + ".tmp", path)

    def read_json(self, name):
        path = os.path.join(self.root, "results", f"{name}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)


def _open_run_dir(config, resume, worker=distribution.Worker()):
    # A multi-worker run's other workers get their own folder: no two processes write one file.
    config = dataclasses.replace(config, run_dir=worker.run_dir(config.run_dir))
    run = RunDir(config.run_dir, is_chief=worker.is_chief)
    saved = os.path.join(run.root, "config.yaml")
    if os.path.exists(saved):
        if not resume:
            raise RunDirectoryError(
                f"{run.root} already holds a run. Pass --resume to continue it, or set another "
                "run_dir (e.g. --set run_dir=runs/new)."
            )
        previous = run_config.load(saved)
        if previous != config:
            changed = [
                f"{section}" for section, value in run_config.to_dict(config).items()
                if run_config.to_dict(previous)[section] != value
            ]
            raise RunDirectoryError(
                f"--resume needs the config the run started with; these sections differ from "
                f"{saved}: {', '.join(changed)}. Use the same config, or another run_dir."
            )
    else:
        os.makedirs(run.root, exist_ok=True)
        run_config.dump(config, saved)
    return run


def _compile(model, learning_rate, epochs, steps_per_epoch):
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, epochs * steps_per_epoch))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=LOSS, metrics=["accuracy"])


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    if steps <= 0:
        raise ValueError("The training dataset has an unknown length; set data.train_limit.")
    return steps


def _evaluate(model, val_ds):
    """Top-1 accuracy in inference mode, without (re)compiling the model."""
    metric = keras.metrics.SparseCategoricalAccuracy()
    for x, y in val_ds:
        metric.update_state(y, model(x, training=False))
    return float(metric.result())


def _build(config, info, bits, **options):
    builder = models.get(config.model.arch)
    return builder(info.input_shape, info.num_classes, bits=bits,
                   bn_momentum=config.model.bn_momentum, **options)


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def train_teachers(config, run, info, train_ds, val_ds, print_fn=print, bits_list=None):
    """Trains (or loads) one teacher per bit width; returns `{bits: model}`."""
    teachers = {}
    steps = _steps_per_epoch(train_ds)
    for bits in bits_list or config.teachers.bits:
        name = f"teacher_w{bits}a{bits}"
        path = run.path("teachers", f"w{bits}a{bits}.keras")
        if os.path.exists(path):
            print_fn(f"[teachers] {bits}-bit teacher: loading {path}")
            teachers[bits] = keras.models.load_model(path)
            continue
        print_fn(f"[teachers] training the {bits}-bit teacher ({config.teachers.quantizer})")
        model = _build(config, info, bits, quantizer=config.teachers.quantizer)
        _compile(model, config.teachers.learning_rate, config.teachers.epochs, steps)
        _, seconds = _timed(lambda: fit_resumable(
            model, train_ds, run_dir=run.root, name=name, epochs=config.teachers.epochs,
            validation_data=val_ds))
        run.write_json(name, {"bits": bits, "accuracy": _evaluate(model, val_ds), "train_seconds": seconds})
        save_atomically(model, path)
        teachers[bits] = model
    return teachers


def train_students(config, run, info, train_ds, val_ds, teachers, print_fn=print, baseline=True):
    """The binary student with MAD from every teacher, and the same student without KD.

    With `teachers=None` only the student without KD is trained; with `baseline=False`
    only the distilled one.
    """
    steps = _steps_per_epoch(train_ds)
    student_options = dict(binary=config.student.binary)
    mad_path = run.path("students", "mad.keras")
    if teachers is not None and not os.path.exists(mad_path):
        print_fn(f"[distill] MAD: binary student from {len(teachers)} teachers {list(teachers)}")
        student = _build(config, info, 1, **student_options)
        d = config.distill
        distiller = MultiTeacherDistiller(
            student, [teachers[b] for b in config.teachers.bits], feature_taps="auto",
            fusion=d.fusion, alpha=d.alpha, beta=d.beta, temperature=d.temperature)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.student.learning_rate, max(1, config.student.epochs * steps))
        distiller.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
        delta = DeltaHistory(run.path("results", "delta_history.csv"),
                             plot_path=run.path("plots", "delta.png"),
                             append=os.path.isdir(os.path.join(run.root, "backup", "student_mad")))
        _, seconds = _timed(lambda: fit_resumable(
            distiller, train_ds, run_dir=run.root, name="student_mad", epochs=config.student.epochs,
            validation_data=val_ds, callbacks=[delta]))
        run.write_json("student_mad", {"accuracy": _evaluate(distiller.student, val_ds),
                                       "train_seconds": seconds, "deltas": {
                                           k: [float(v) for v in vals]
                                           for k, vals in distiller.deltas().items()}})
        save_atomically(distiller.student, mad_path)
    plain_path = run.path("students", "plain.keras")
    if baseline and not os.path.exists(plain_path):
        print_fn("[train] the same binary student without distillation (same budget)")
        student = _build(config, info, 1, **student_options)
        _compile(student, config.student.learning_rate, config.student.epochs, steps)
        _, seconds = _timed(lambda: fit_resumable(
            student, train_ds, run_dir=run.root, name="student_plain", epochs=config.student.epochs,
            validation_data=val_ds))
        run.write_json("student_plain", {"accuracy": _evaluate(student, val_ds), "train_seconds": seconds})
        save_atomically(student, plain_path)
    names = ("mad",) * (teachers is not None) + ("plain",) * baseline
    return {name: keras.models.load_model(run.path("students", f"{name}.keras")) for name in names}


def convert_and_benchmark(config, run, sample, named_models, print_fn=print):
    """LCE conversion (verified), size, latency and bit accounting of each model."""
    for name, model in named_models.items():
        if run.read_json(f"convert_{name}") is not None:
            continue
        print_fn(f"[convert] {name} -> tflite/{name}.tflite")
        report = lce_convert(model, run.path("tflite", f"{name}.tflite"), sample=sample,
                             verify=config.convert.verify, int8=config.convert.int8)
        print_fn(str(report))
        latency = measure_latency(report.path, num_threads=config.benchmark.threads,
                                  runs=config.benchmark.runs, use_xnnpack=not report.binary_layers)
        totals = summary(model, print_fn=lambda *_: None)
        run.write_json(f"convert_{name}", {**report.to_dict(), "latency_ms": latency,
                                           "summary": {k: totals[k] for k in ("params", "memory_mbit", "bops", "flops", "ops")}})


def write_report(config, run, print_fn=print):
    """`report.md` and the PNG plots, from the JSON results only (so a resume can redo it)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    accuracy = {f"{b}-bit teacher" if b != 32 else "float teacher":
                run.read_json(f"teacher_w{b}a{b}")["accuracy"] for b in config.teachers.bits}
    accuracy["binary, no KD"] = run.read_json("student_plain")["accuracy"]
    accuracy["binary, MAD"] = run.read_json("student_mad")["accuracy"]
    converted = {name: run.read_json(f"convert_{name}") for name in ("float_teacher", "plain", "mad")}

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(accuracy), [100 * v for v in accuracy.values()], color="tab:blue")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{config.model.arch} on {config.data.name}")
    ax.tick_params(axis="x", rotation=30)
    for i, v in enumerate(accuracy.values()):
        ax.text(i, 100 * v, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(run.path("plots", "accuracy.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    names = ["float_teacher", "mad"]
    axes[0].bar(names, [converted[n]["file_size"] / 1e3 for n in names], color=["tab:gray", "tab:orange"])
    axes[0].set_ylabel("TFLite size (kB)")
    axes[1].bar(names, [converted[n]["latency_ms"] for n in names], color=["tab:gray", "tab:orange"])
    axes[1].set_ylabel(f"latency (ms, {config.benchmark.threads} thread)")
    fig.suptitle("binary student vs float model (this machine)")
    fig.tight_layout()
    fig.savefig(run.path("plots", "size_latency.png"), dpi=120)
    plt.close(fig)

    float_c, mad_c = converted["float_teacher"], converted["mad"]
    lines = [
        f"# kerasbnn report: {config.model.arch} on {config.data.name}",
        "",
        f"Budget: teachers {config.teachers.epochs} epochs, students {config.student.epochs} epochs, "
        f"train_limit {config.data.train_limit}, val_limit {config.data.val_limit}, seed {config.seed}. "
        "One seed: differences of 2-3 points are within seed noise at this budget.",
        "",
        "| model | test accuracy |",
        "|---|---|",
        *[f"| {k} | {100 * v:.2f}% |" for k, v in accuracy.items()],
        "",
        f"MAD vs no KD: {100 * (accuracy['binary, MAD'] - accuracy['binary, no KD']):+.2f} points.",
        "",
        "| file | size | latency (ms) | LceBconv2d | max abs diff Keras vs LCE | memory (Mbit) | OPs |",
        "|---|---|---|---|---|---|---|",
        *[f"| tflite/{n}.tflite | {c['file_size'] / 1e3:.1f} kB | {c['latency_ms']:.3f} | {c['bconv_ops']}"
          f" | {'n/a' if c['max_abs_diff'] is None else format(c['max_abs_diff'], '.1e')} | {c['summary']['memory_mbit']:.3f}"
          f" | {c['summary']['ops']:.3g} |" for n, c in converted.items()],
        "",
        f"Binary student vs float: size {float_c['file_size'] / mad_c['file_size']:.2f}x smaller, "
        f"latency {float_c['latency_ms'] / mad_c['latency_ms']:.2f}x (x86 has only LCE's portable "
        "kernels; ARM devices are where binary convolutions pay off: see tflite/README.md).",
        "",
        "![accuracy](plots/accuracy.png)",
        "![delta](plots/delta.png)",
        "![size and latency](plots/size_latency.png)",
        "",
    ]
    path = run.path("report.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)
    return path, accuracy


def _setup(config, resume):
    """Checks the config against the registries, opens the run directory, loads the data."""
    worker = distribution.worker(config.distribute)  # TF_CONFIG is checked before training
    if config.distribute == "multiworker":
        distribution.multi_worker_strategy()  # must exist before the first TensorFlow op
    info = datasets.info(config.data.name)  # unknown dataset fails here, before training
    models.get(config.model.arch)  # unknown architecture fails here
    if config.distill.method not in METHODS:
        raise ValueError(
            f"Unknown distill.method {config.distill.method!r}; valid: {', '.join(METHODS)}.")
    keras.utils.set_random_seed(config.seed)
    d = config.data
    train_ds = datasets.load(d.name, "train", d.batch_size, augment=d.augment, seed=config.seed,
                             limit=d.train_limit, drop_remainder=True)
    val_ds = datasets.load(d.name, "test", d.batch_size, limit=d.val_limit)
    run = _open_run_dir(config, resume, worker)  # only once the data is known to be there
    return run, info, train_ds, val_ds


def run_training(config, bits, *, resume=False, print_fn=print):
    """Trains one model of `config.model.arch` at `bits` (1: the binary student, no KD)."""
    run, info, train_ds, val_ds = _setup(config, resume)
    with distribution.scope(config.distribute, print_fn):
        if bits == 1:
            return train_students(config, run, info, train_ds, val_ds, None, print_fn)["plain"]
        return train_teachers(config, run, info, train_ds, val_ds, print_fn, bits_list=[bits])[bits]


def run_distillation(config, *, resume=False, print_fn=print):
    """Teachers (trained, or loaded from the run directory), then the distilled student."""
    run, info, train_ds, val_ds = _setup(config, resume)
    with distribution.scope(config.distribute, print_fn):
        teachers = train_teachers(config, run, info, train_ds, val_ds, print_fn)
        return train_students(config, run, info, train_ds, val_ds, teachers, print_fn,
                              baseline=False)["mad"]


def _run_cmtkd(config, run, info, train_ds, val_ds, print_fn):
    from kerasbnn.distill import CollaborativeDistiller

    path = run.path("students", "cmtkd.keras")
    if not os.path.exists(path):
        options = dict(config.distill.options)
        print_fn(f"[distill] CMT-KD {config.model.arch} with options {options}")
        distiller = CollaborativeDistiller.from_zoo(
            config.model.arch, info.input_shape, info.num_classes,
            builder_kwargs={"bn_momentum": config.model.bn_momentum}, **options)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.student.learning_rate, max(1, config.student.epochs * _steps_per_epoch(train_ds)))
        distiller.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
        delta = DeltaHistory(run.path("results", "pi_history.csv"), plot_path=run.path("plots", "pi.png"),
                             append=os.path.isdir(os.path.join(run.root, "backup", "student_cmtkd")))
        fit_resumable(distiller, train_ds, run_dir=run.root, name="student_cmtkd",
                      epochs=config.student.epochs, validation_data=val_ds, callbacks=[delta])
        run.write_json("student_cmtkd", {"accuracy": _evaluate(distiller.student, val_ds)})
        save_atomically(distiller.student, path)
    return keras.models.load_model(path)


def _run_config_method(config, run, function, name, print_fn):
    """progressive / pkkd: the method's own runner, fed the run's data settings."""
    d = config.data
    options = {"dataset": d.name, "batch_size": d.batch_size, "train_limit": d.train_limit,
               "test_limit": d.val_limit, "seed": config.seed,
               "output": run.path("students", f"{name}.keras"), **config.distill.options}
    if name == "progressive":
        options.setdefault("model", config.model.arch)
    print_fn(f"[distill] {name} with {options}")
    result = function(options)
    run.write_json(f"student_{name}", result)
    return result


def run_method(config, *, resume=False, print_fn=print):
    """`kerasbnn distill --method M`: runs M with the config; returns the student's results."""
    method = config.distill.method
    if method in ("mad", "kd"):
        run_distillation(config, resume=resume, print_fn=print_fn)
        own_dir = distribution.worker(config.distribute).run_dir(config.run_dir)
        return RunDir(own_dir).read_json("student_mad")
    if method == "cmtkd":
        run, info, train_ds, val_ds = _setup(config, resume)
        with distribution.scope(config.distribute, print_fn):
            _run_cmtkd(config, run, info, train_ds, val_ds, print_fn)
        return run.read_json("student_cmtkd")
    from kerasbnn import distill

    if config.distribute != "none":
        raise ValueError(f"distribute={config.distribute!r} is supported by mad, kd and cmtkd, "
                         f"not by {method}; set distribute: none.")
    datasets.info(config.data.name)
    run = _open_run_dir(config, resume)
    function = distill.run_progressive if method == "progressive" else distill.run_pkkd
    return _run_config_method(config, run, function, method, print_fn)


def run_pipeline(config, *, resume=False, print_fn=print):
    """Runs every step of `config` (a `kerasbnn.config.RunConfig`); returns the report path
    (None on a multi-worker run's non-chief workers, which only train).

    Raises:
        RunDirectoryError: the run directory holds a run and `resume` is False, or
            `resume` is True with a different config.
        kerasbnn.data.DataNotFoundError: the dataset is not available (before training).
        ValueError: an unknown architecture, dataset or option (before training).
    """
    run, info, train_ds, val_ds = _setup(config, resume)
    with distribution.scope(config.distribute, print_fn):
        teachers = train_teachers(config, run, info, train_ds, val_ds, print_fn)
        train_students(config, run, info, train_ds, val_ds, teachers, print_fn)
    if not run.is_chief:
        print_fn(f"[distribute] training done; this worker's files are in {run.root}, and the "
                 "chief converts, benchmarks and writes the report.")
        return None
    # Conversion works on plain (not distributed) copies, loaded back from the run directory.
    load = lambda *parts: keras.models.load_model(run.path(*parts))  # noqa: E731
    named = {"float_teacher": load("teachers", "w32a32.keras") if 32 in config.teachers.bits
             else _build(config, info, 32),
             "mad": load("students", "mad.keras"), "plain": load("students", "plain.keras")}
    sample = np.concatenate([x for x, _ in val_ds.take(1)])[:4]
    convert_and_benchmark(config, run, sample, named, print_fn)
    path, accuracy = write_report(config, run, print_fn)
    for name, value in accuracy.items():
        print_fn(f"  {name:>16}: {100 * value:.2f}%")
    print_fn(f"Report written to {path}")
    return path
