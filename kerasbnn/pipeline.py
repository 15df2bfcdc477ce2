"""The whole job in one call: teachers -> distilled binary student -> LCE -> report.

`kerasbnn pipeline --config run.yaml` (and `make demo`) run `run_pipeline`. Each step writes
its artefact atomically into the run directory and is skipped when that artefact exists,
so `--resume` after a crash or a kill continues where the run stopped (and a step that
was cut mid-training continues from its last finished epoch through
`keras.callbacks.BackupAndRestore`).

The run directory's layout is in `kerasbnn.run_dir`.
"""

import inspect
import os
import time

import keras
import numpy as np

from kerasbnn import config as run_config
from kerasbnn import data as datasets
from kerasbnn import distribution
from kerasbnn import methods, models
from kerasbnn import resume as resume_plan
from kerasbnn.distill.multi_teacher import check_hyperparameters
from kerasbnn.export import lce_convert, measure_latency
from kerasbnn.models.precision import BINARY_SCHEMES, QUANTIZERS, resolve_precision
from kerasbnn.run_dir import check_run_dir, open_run_dir, recording_config_errors
from kerasbnn.training import cosine_adam, fit_resumable, save_atomically
from kerasbnn.utils.summary import summary

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
#: Config keys every run reads (or that are no step's input), whatever its methods.
ALWAYS_READ = ("run_dir", "seed", "distribute", "data.", "model.", "distill.method",
               "distill.compare", "convert.", "benchmark.")


def _check_value(key, check, *args, **kwargs):
    """Runs `check`; a `ValueError` becomes a `ConfigError` that starts with `key`."""
    try:
        return check(*args, **kwargs)
    except run_config.ConfigError:
        raise
    except ValueError as error:
        message = str(error)
        if not message.startswith(key):
            message = f"{key}: {message}"
        raise run_config.ConfigError(message) from None


def _check_data(config):
    """The dataset exists and holds what `data.*` asks for."""
    d = config.data
    info = _check_value("data.name", datasets.info, d.name)
    train, test = list(info.splits)[0], list(info.splits)[-1]
    limits = (("train_limit", d.train_limit, train), ("val_limit", d.val_limit, test))
    for key, limit, split in limits:
        if limit is not None and limit > info.splits[split]:
            raise run_config.ConfigError(
                f"data.{key}={limit} is more than the {info.splits[split]} images of {d.name}'s "
                f"{split} split; set at most {info.splits[split]}, or null for the whole split.")
    images = d.train_limit or info.splits[train]
    if images < d.batch_size:
        raise run_config.ConfigError(
            f"data.batch_size={d.batch_size} is more than the {images} training images "
            f"(data.train_limit): an epoch would have no full batch; lower data.batch_size.")
    return info


def _check_builder(config):
    """`model.arch` takes the options the pipeline builds teachers and students with."""
    needed = ("bits", "quantizer", "binary", "bn_momentum")

    def accepts(name):
        parameters = inspect.signature(models.get(name)).parameters
        return all(p in parameters for p in needed)

    if not accepts(config.model.arch):
        able = [name for name in models.names() if accepts(name)]
        raise run_config.ConfigError(
            f"model.arch={config.model.arch!r} has no quantizer/binary options, which teachers "
            f"and students are built with; use one of {', '.join(able)} (adder networks train "
            "with `kerasbnn distill --method pkkd`).")


def _check_names(config):
    """`distill.method` and `distill.compare` name registered methods, each once."""
    d = config.distill
    for key, name in [("distill.method", d.method)] + [("distill.compare", n) for n in d.compare]:
        if name not in methods.METHODS:
            raise run_config.ConfigError(
                f"Unknown {key} {name!r}; valid: {', '.join(methods.METHODS.keys())}."
                f"{run_config._hint(name, methods.METHODS.keys())}")
    if len(set(d.compare)) != len(d.compare):
        raise run_config.ConfigError(f"distill.compare={d.compare} lists a method twice.")


def _reads(name, key):
    """Whether method `name` (with the teachers it trains on) reads config key `key`."""
    keys = methods.config_keys(name) + ("teachers.",) * bool(methods.needs_teachers(name) != ())
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


def _check_fields(config, names):
    """A key changed from its default that none of the methods `names` reads is refused, by
    name: the run would silently ignore it."""
    defaults = resume_plan.flatten(run_config.RunConfig())
    for key, value in resume_plan.flatten(config).items():
        always = any(key == k or (k.endswith(".") and key.startswith(k)) for k in ALWAYS_READ)
        if always or value == defaults[key] or any(_reads(n, key) for n in names):
            continue
        readers = [n for n in methods.METHODS.keys() if _reads(n, key)]
        raise run_config.ConfigError(
            f"{key}={value!r} does not apply to {', '.join(names)}: "
            f"{'only ' + ', '.join(readers) if readers else 'no method'} "
            f"read{'s' if len(readers) < 2 else ''} it. "
            f"Remove it from the config (its default is {defaults[key]!r}).")


def _check_methods(config, names=None):
    """The methods `names` (default `arms(config)`) are registered, each can honour every
    config value it is given (its `check`), every changed key is read by one of them, at most
    one reads `distill.options`, and the options hold only keys that method reads."""
    _check_names(config)
    names = arms(config) if names is None else names
    for name in names:
        if methods.METHODS.get(name).check is not None:
            methods.METHODS.get(name).check(config)
    _check_fields(config, names)
    readers = [n for n in names if methods.option_keys(n) is not None]
    if len(readers) > 1:
        raise run_config.ConfigError(
            f"distill.compare={names} holds {', '.join(readers)}, which all read "
            "distill.options; compare at most one of them per run.")
    if any(methods.needs_teachers(n) == (32,) for n in names) and 32 not in config.teachers.bits:
        floats = [n for n in names if methods.needs_teachers(n) == (32,)]
        raise run_config.ConfigError(
            f"{', '.join(floats)} distil(s) from the float teacher: add 32 to teachers.bits, "
            "e.g. --set 'teachers.bits=[32, 8, 4, 2]'.")
    d = config.distill
    valid = methods.option_keys(readers[0]) if readers else None
    unknown = sorted(set(d.options) - (valid or set()))
    if unknown and valid is not None:
        raise run_config.ConfigError(
            f"Unknown distill.options key {unknown[0]!r} for method {readers[0]}."
            f"{run_config._hint(unknown[0], valid)}")


def check_config(config, *, builds=True, names=None):
    """Checks every value of `config` against kerasbnn's registries, before anything is
    written or trained: dataset and limits, architecture, teachers' quantizer and bit
    widths, the student's binary scheme, the method and its distillation options.

    Args:
        builds: the command builds zoo teachers and students (train, pipeline, distill
            mad/kd), so `model.arch` must take their precision options.
        names: the methods the command trains (default `arms(config)`): every changed key
            must be one of theirs.

    Returns:
        The dataset's `DatasetInfo`.

    Raises:
        kerasbnn.config.ConfigError: naming the key and the fix.
    """
    if config.distribute not in distribution.STRATEGIES:
        raise run_config.ConfigError(
            f"distribute={config.distribute!r} is unknown; valid: "
            f"{', '.join(distribution.STRATEGIES)}.")
    info = _check_data(config)
    _check_value("model.arch", models.get, config.model.arch)
    if builds:
        _check_builder(config)
    t = config.teachers
    if t.quantizer not in QUANTIZERS:
        raise run_config.ConfigError(
            f"teachers.quantizer={t.quantizer!r} is unknown; valid: {', '.join(QUANTIZERS)}.")
    if not t.bits or len(set(t.bits)) != len(t.bits):
        raise run_config.ConfigError(
            f"teachers.bits={t.bits} must list distinct bit widths, e.g. [32, 8, 4, 2].")
    for bits in t.bits:
        _check_value("teachers.bits", resolve_precision, bits, t.quantizer)
    if config.student.binary not in BINARY_SCHEMES:
        raise run_config.ConfigError(
            f"student.binary={config.student.binary!r} is unknown; valid: "
            f"{', '.join(BINARY_SCHEMES)}.")
    _check_methods(config, names)
    d = config.distill
    _check_value("distill", check_hyperparameters, len(t.bits), fusion=d.fusion,
                 kl_weight=d.kl_weight, feature_weight=d.feature_weight,
                 temperature=d.temperature, prefix="distill.")
    return info


def _compile(model, learning_rate, epochs, steps_per_epoch):
    model.compile(optimizer=cosine_adam(learning_rate, epochs, steps_per_epoch), loss=LOSS,
                  metrics=["accuracy"])


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    if steps == 0:
        raise ValueError("The training data found holds fewer images than one batch; lower "
                         "data.batch_size or provide the whole dataset.")
    if steps < 0:
        raise ValueError("The training dataset has an unknown length; set data.train_limit.")
    return steps


def evaluate(model, val_ds):
    """Top-1 accuracy of `model` (logits) on `val_ds` in inference mode, without (re)compiling
    it: the one accuracy of a run (teachers, every method's student, the examples)."""
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
            validation_data=val_ds, advice=_nan_advice(config, "teachers")))
        run.write_json(name, {"bits": bits, "accuracy": evaluate(model, val_ds),
                              "train_seconds": seconds, **_budget(config.teachers)})
        save_atomically(model, path)
        if bits == 32:
            run.discard("convert_float_teacher")  # made from an earlier teacher
        teachers[bits] = model
    return teachers


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


def _verification_cell(converted):
    """Max |Keras - LCE|, top-1 agreement and rounding flips of one conversion result."""
    if converted.get("max_abs_diff") is None:
        return "not verified"
    cell = f"max diff {converted['max_abs_diff']:.1e}"
    if converted.get("top1_agreement") is not None:
        cell += f", top-1 agree {100 * converted['top1_agreement']:.0f}%"
    flips = sum((converted.get("flipped_bits") or {}).values())
    if flips:
        layer, bits = converted["first_flip"]
        cell += f", {flips} rounding flip(s), first {layer} ({bits})"
    return cell


def _label(name):
    return "binary, no KD" if name == "none" else f"binary, {name}"


def _plot_accuracy(config, run, accuracy):
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(accuracy)), 3.5))
    ax.bar(list(accuracy), [100 * v for v in accuracy.values()], color="tab:blue")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{config.model.arch} on {config.data.name}")
    ax.tick_params(axis="x", rotation=30)
    for i, v in enumerate(accuracy.values()):
        ax.text(i, 100 * v, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(run.path("plots", "accuracy.png"), dpi=120)
    plt.close(fig)


def _plot_size_latency(config, run, converted):
    from matplotlib import pyplot as plt

    names = list(converted)
    colors = ["tab:gray"] + ["tab:orange"] * (len(names) - 1)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(names)), 3))
    axes[0].bar(names, [converted[n]["file_size"] / 1e3 for n in names], color=colors)
    axes[0].set_ylabel("TFLite size (kB)")
    axes[1].bar(names, [converted[n]["latency_ms"] for n in names], color=colors)
    axes[1].set_ylabel(f"latency (ms, {config.benchmark.threads} thread)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("binary students vs float model (this machine)")
    fig.tight_layout()
    fig.savefig(run.path("plots", "size_latency.png"), dpi=120)
    plt.close(fig)


def _method_lines(names, accuracy):
    """The methods side by side: accuracy and the difference to the student without KD."""
    base = accuracy.get(_label("none"))
    lines = ["| method | test accuracy | vs no KD |", "|---|---|---|"]
    for name in names:
        value = accuracy[_label(name)]
        delta = "" if base is None or name == "none" else f"{100 * (value - base):+.2f} pt"
        lines.append(f"| {name} | {100 * value:.2f}% | {delta} |")
    return lines


def write_report(config, run, print_fn=print):
    """`report.md` and the PNG plots, from the JSON results only (so a resume can redo it)."""
    import matplotlib

    matplotlib.use("Agg")
    names = arms(config)
    accuracy = {f"{b}-bit teacher" if b != 32 else "float teacher":
                run.read_json(f"teacher_w{b}a{b}")["accuracy"]
                for b in teacher_bits(config, names)}
    accuracy.update({_label(n): run.read_json(f"student_{n}")["accuracy"] for n in names})
    converted = {name: run.read_json(f"convert_{name}") for name in ("float_teacher", *names)}
    _plot_accuracy(config, run, accuracy)
    _plot_size_latency(config, run, converted)
    float_c, best = converted["float_teacher"], converted[names[-1]]
    plots = ["![accuracy](plots/accuracy.png)"]
    plots += [f"![delta {n}](plots/delta_{n}.png)" for n in names if n == "mad"]
    plots += ["![pi](plots/pi.png)"] * ("cmtkd" in names)
    lines = [
        f"# kerasbnn report: {config.model.arch} on {config.data.name}",
        "",
        f"Budget: teachers {config.teachers.epochs} epochs, students {config.student.epochs} "
        f"epochs, train_limit {config.data.train_limit}, val_limit {config.data.val_limit}, "
        f"seed {config.seed}. Every method trained on the same teachers, data and seed. One "
        "seed: differences of 2-3 points are within seed noise at this budget.",
        "",
        "| model | test accuracy |",
        "|---|---|",
        *[f"| {k} | {100 * v:.2f}% |" for k, v in accuracy.items()],
        "",
        *_method_lines(names, accuracy),
        "",
        "| file | size | latency (ms) | LceBconv2d | Keras vs LCE | memory (Mbit) | OPs |",
        "|---|---|---|---|---|---|---|",
        *[f"| tflite/{n}.tflite | {c['file_size'] / 1e3:.1f} kB | {c['latency_ms']:.3f} | "
          f"{c['bconv_ops']} | {_verification_cell(c)} | {c['summary']['memory_mbit']:.3f} | "
          f"{c['summary']['ops']:.3g} |" for n, c in converted.items()],
        "",
        f"Binary student ({names[-1]}) vs float: size "
        f"{float_c['file_size'] / best['file_size']:.2f}x smaller, latency "
        f"{float_c['latency_ms'] / best['latency_ms']:.2f}x (x86 has only LCE's portable kernels; "
        "ARM devices are where binary convolutions pay off: see tflite/README.md).",
        "",
        *plots,
        "![size and latency](plots/size_latency.png)",
        "",
    ]
    path = run.path("report.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)
    return path, accuracy


def _note_smaller_data(config, info, train_ds, print_fn):
    """Says so when the data found holds fewer training images than the config asks for (a
    partial local copy): training then uses what is there."""
    d = config.data
    wanted = (d.train_limit or info.splits[list(info.splits)[0]]) // d.batch_size
    steps = int(train_ds.cardinality())
    if 0 <= steps < wanted:
        print_fn(f"[data] note: {d.name} here holds fewer training images than data.train_limit="
                 f"{d.train_limit} asks for: {steps} batches of {d.batch_size} instead of "
                 f"{wanted}; training uses them all.")


def _setup(config, resume, print_fn=print, builds=True, names=None):
    """Checks the whole config and the run directory, loads the data, opens the run directory
    (nothing is written before the checks pass and the data is there)."""
    worker = distribution.worker(config.distribute)  # TF_CONFIG is checked before training
    if config.distribute == "multiworker":
        distribution.multi_worker_strategy()  # must exist before the first TensorFlow op
    info = check_config(config, builds=builds, names=names)
    check_run_dir(worker.run_dir(config.run_dir))
    keras.utils.set_random_seed(config.seed)
    d = config.data
    train_ds = datasets.load(d.name, "train", d.batch_size, augment=d.augment, seed=config.seed,
                             limit=d.train_limit, drop_remainder=True)
    val_ds = datasets.load(d.name, "test", d.batch_size, limit=d.val_limit)
    _note_smaller_data(config, info, train_ds, print_fn)
    run = open_run_dir(config, resume, worker, print_fn)  # only once the data is known to be there
    return run, info, train_ds, val_ds


def _budget(section):
    """What a training step's results JSON records of its own settings (a resume may change
    the learning rate of later steps)."""
    return {"epochs": section.epochs, "learning_rate": section.learning_rate}


def _nan_advice(config, section):
    """What to do after a non-finite loss in a step trained with `config.<section>`."""
    rate = getattr(config, section).learning_rate
    return (f"Lower {section}.learning_rate (now {rate:g}), e.g. --set {section}.learning_rate="
            f"{rate / 10:g}, and run the same command again with --resume: finished steps are "
            "kept.")


def _job(config, run, info, train_ds, val_ds, teachers, print_fn):
    return methods.StudentJob(
        config, run, info, train_ds, val_ds, teachers,
        build=lambda bits, **options: _build(config, info, bits, **options),
        evaluate=lambda model: evaluate(model, val_ds),
        advice=_nan_advice(config, "student"), print_fn=print_fn)


def arms(config):
    """The methods a pipeline run trains side by side: `distill.compare`, or the baseline
    (`none`) and `distill.method`."""
    return list(config.distill.compare) or list(dict.fromkeys(["none", config.distill.method]))


def teacher_bits(config, names):
    """The bit widths of `config.teachers.bits` that the methods `names` distil from."""
    needed = set()
    for name in names:
        bits = methods.needs_teachers(name)
        needed |= set(config.teachers.bits if bits is None else bits)
    return [b for b in config.teachers.bits if b in needed]


def _train_methods(config, names, resume, print_fn, checked=None):
    """Opens the run, trains the teachers `names` need, then each method's student; the
    config's keys are checked against the methods `checked` (default `names`)."""
    builds = any(methods.METHODS.get(name).zoo for name in names)
    run, info, train_ds, val_ds = _setup(config, resume, print_fn, builds=builds,
                                         names=names if checked is None else checked)
    with recording_config_errors(run), distribution.scope(config.distribute, print_fn):
        bits = teacher_bits(config, names)
        teachers = train_teachers(config, run, info, train_ds, val_ds, print_fn, bits) if bits else {}
        job = _job(config, run, info, train_ds, val_ds, teachers, print_fn)
        for name in names:
            methods.run_method(name, job)
    return run, info, val_ds


def run_training(config, bits, *, resume=False, print_fn=print):
    """Trains one model of `config.model.arch` at `bits` (1: the binary student, no KD)."""
    if bits == 1:
        run, _, _ = _train_methods(config, ["none"], resume, print_fn, checked=arms(config))
        return keras.models.load_model(run.path("students", "none.keras"))
    _check_value("--bits", resolve_precision, bits, config.teachers.quantizer)
    run, info, train_ds, val_ds = _setup(config, resume, print_fn)
    with recording_config_errors(run), distribution.scope(config.distribute, print_fn):
        return train_teachers(config, run, info, train_ds, val_ds, print_fn, bits_list=[bits])[bits]


def _check_distributes(config, names):
    """Methods that cannot train under `config.distribute` fail before anything is written."""
    single = [n for n in names if n in methods.METHODS and not methods.METHODS.get(n).distributes]
    if single and config.distribute != "none":
        able = [n for n in methods.METHODS.keys() if methods.METHODS.get(n).distributes]
        raise run_config.ConfigError(
            f"distribute={config.distribute!r} is supported by {', '.join(able)}, not by "
            f"{', '.join(single)}; set distribute: none.")


def run_method(config, *, resume=False, print_fn=print):
    """`kerasbnn distill --method M`: the teachers M needs, then M's student; returns its
    results (`results/student_<M>.json`)."""
    method = config.distill.method
    _check_distributes(config, [method])
    run, _, _ = _train_methods(config, [method], resume, print_fn)
    return run.read_json(f"student_{method}")


def run_pipeline(config, *, resume=False, print_fn=print):
    """Runs every step of `config` (a `kerasbnn.config.RunConfig`): the teachers the methods
    need, one student per method of `arms(config)` on the same teachers, data and seed, LCE
    conversion of the float teacher and every student, and `report.md` comparing them.
    Returns the report path (None on a multi-worker run's non-chief workers, which only train).

    Raises:
        RunDirectoryError: the run directory holds a run and `resume` is False (unless that
            run stopped on a config error), or `resume` is True with changes that would
            invalidate finished steps (the message names the keys and the fix).
        UnwritableRunDirectoryError: the run directory cannot be written (before anything).
        kerasbnn.config.ConfigError: a value of the config (before anything is written).
        kerasbnn.data.DataNotFoundError: the dataset is not available or its files are
            corrupt (before training).
        kerasbnn.training.NonFiniteLossError: a loss became NaN or infinite; finished steps
            and the last finished epoch stay, and the message says how to resume.
        kerasbnn.export.ExportError: conversion or its verification failed; the trained
            models stay, and `--resume` (e.g. with `convert.verify=false`) retries it.
    """
    names = arms(config)
    _check_distributes(config, names)
    run, info, val_ds = _train_methods(config, names, resume, print_fn)
    if not run.is_chief:
        print_fn(f"[distribute] training done; this worker's files are in {run.root}, and the "
                 "chief converts, benchmarks and writes the report.")
        return None
    # Conversion works on plain (not distributed) copies, loaded back from the run directory.
    load = lambda *parts: keras.models.load_model(run.path(*parts))  # noqa: E731
    named = {"float_teacher": load("teachers", "w32a32.keras")
             if os.path.exists(run.path("teachers", "w32a32.keras")) else _build(config, info, 32)}
    named.update({name: load("students", f"{name}.keras") for name in names})
    sample = np.concatenate([x for x, _ in val_ds.take(1)])[:4]
    convert_and_benchmark(config, run, sample, named, print_fn)
    path, accuracy = write_report(config, run, print_fn)
    for name, value in accuracy.items():
        print_fn(f"  {name:>16}: {100 * value:.2f}%")
    print_fn(f"Report written to {path}")
    return path
