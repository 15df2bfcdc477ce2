"""The run's networks and its teachers: `build` makes a network of `model.arch` at a bit
width (teachers and students alike), `evaluate` is the one top-1 accuracy of a run, and
`train_teachers` loads each teacher from the run directory or `teachers.cache_dir`, or
trains it (the k-bit ones from the float one, `teachers.init`)."""

import os
import time

import keras

from kerasbnn import teacher_cache
from kerasbnn.binarization.builder import builder as arch_builder
from kerasbnn.run.advice import nan_advice
from kerasbnn.training import cosine_adam, discard_backup, fit_resumable, save_atomically
from kerasbnn.transfer import from_float
from kerasbnn.utils.inference import inference_step


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


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
    it: the one accuracy of a run (teachers, every method's student, the examples), through
    `kerasbnn.utils.inference.inference_step` (compiled)."""
    forward = inference_step(model)
    metric = keras.metrics.SparseCategoricalAccuracy()
    for x, y in val_ds:
        metric.update_state(y, forward(x))
    return float(metric.result())


def build(config, info, bits, **options):
    """A network of `model.arch` for the dataset `info` at `bits` (a teacher, or with
    `binary=...` a student), at the config's `model.width_multiplier`, `model.block` and
    `model.bn_momentum`; `options` go to the architecture's builder."""
    builder = arch_builder(config.model.arch)
    if config.model.width_multiplier != 1.0:
        options["width_multiplier"] = config.model.width_multiplier
    if config.model.block is not None:
        options.setdefault("block", config.model.block)
    return builder(info.input_shape, info.num_classes, bits=bits,
                   bn_momentum=config.model.bn_momentum, **options)


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def train_teachers(config, run, info, data, print_fn=print, bits_list=None):
    """Trains (or loads) one teacher per bit width; returns `{bits: model}`.

    The float teacher comes first: every k-bit teacher starts from it (matching weights
    copied, BatchNorm statistics recomputed: `kerasbnn.transfer.from_float`) and is then
    fine-tuned; with `teachers.init: random` every teacher trains apart from its own random
    start (`teacher_cache.teacher_seed`), and the float one only when it is wanted. A teacher is loaded from the run directory when it is there, else from
    `teachers.cache_dir` under its key (`kerasbnn.teacher_cache`), else trained and stored.

    Args:
        data: the run's `kerasbnn.run.data.RunData`.
        bits_list: the bit widths to return (default `teachers.bits`); the float teacher is
            made whenever one of them is below 32 (`teachers.init: float`).
    """
    wanted = list(bits_list or config.teachers.bits)
    teachers = {}
    first = [32] * (32 in wanted or config.teachers.init == "float")
    for bits in [*first, *(b for b in wanted if b != 32)]:
        teachers[bits] = _teacher(config, run, info, data, bits, teachers.get(32), print_fn)
    return {bits: teachers[bits] for bits in wanted}


def _teacher(config, run, info, data, bits, float_teacher, print_fn):
    """The `bits`-bit teacher: from the run directory, the cache, or trained (`train_teachers`)."""
    name, path = run.teacher_step(bits), run.teacher(bits)
    key, settings = teacher_cache.teacher_key(config, bits)
    if os.path.exists(path):
        print_fn(f"[teachers] {bits}-bit teacher: loading {path}")
        discard_backup(run.root, name)  # a kill right after the save left it
        return keras.models.load_model(path)
    cached = teacher_cache.load(config.teachers.cache_dir, key, path)
    if cached is not None:
        print_fn(f"[teachers] {bits}-bit teacher: cached as {key} in {config.teachers.cache_dir}")
        run.write_json(name, cached)
        if bits == 32:
            run.discard(run.convert_step("float_teacher"))  # made from an earlier teacher
        return keras.models.load_model(path)
    t = config.teachers
    seed = teacher_cache.teacher_seed(config, bits)
    keras.utils.set_random_seed(seed)
    model = build(config, info, bits, quantizer=t.quantizer)
    epochs, start = (t.float_epochs or t.epochs), None
    if bits == 32 or t.init == "random":
        print_fn(f"[teachers] training the {'float' if bits == 32 else f'{bits}-bit'} teacher "
                 f"from its own random start (seed {seed}, {epochs} epochs)")
    else:
        epochs = t.epochs
        from_float(float_teacher, model, data.plain(), t.bn_batches)
        start = evaluate(model, data.val)
        print_fn(f"[teachers] {bits}-bit teacher ({t.quantizer}) from the float teacher: "
                 f"{100 * start:.2f}% after copying and recomputing BatchNorm; fine-tuning "
                 f"{epochs} epochs")
    train_ds = data.train(seed)
    _compile(model, t.learning_rate, epochs, _steps_per_epoch(train_ds))
    _, seconds = _timed(lambda: fit_resumable(
        model, train_ds, run_dir=run.root, name=name, epochs=epochs, validation_data=data.val,
        advice=nan_advice(config, "teachers"), divergence=config.divergence_factor,
        keep_backup=True, patience=t.patience, print_fn=print_fn))
    result = {"bits": bits, "key": key, "quantizer": None if bits == 32 else t.quantizer,
              "init": "random" if bits == 32 else t.init, "seed": seed,
              "accuracy": evaluate(model, data.test), **data.val_result(model),
              "start_accuracy": start, "train_seconds": seconds, "epochs": epochs,
              "learning_rate": t.learning_rate}
    run.write_json(name, result)
    save_atomically(model, path)
    teacher_cache.store(t.cache_dir, key, settings, path, result)
    discard_backup(run.root, name)  # only now: a kill before the save loses no epoch
    if bits == 32:
        run.discard(run.convert_step("float_teacher"))  # made from an earlier teacher
    return model
