"""The whole job in one call: teachers -> distilled binary student -> LCE -> report.

`kerasbnn pipeline --config run.yaml` (and `make demo`) run `run_pipeline`. Each step writes
its artefact atomically into the run directory and is skipped when that artefact exists
(and reads back: `kerasbnn.resume`), so `--resume` after a crash, a kill, a full disk or
Ctrl-C continues where the run stopped. A step cut mid-training continues from its last
finished epoch (`kerasbnn.training.EpochBackup`); the backup is removed only once the
step's artefact and results are written, so a kill in between loses no epoch.

The run directory is `kerasbnn.run_dir.RunDir` (its layout: `kerasbnn.run.layout`); the
parts of a run, one job per module (checks, data, teachers, conversion, report), are in
`kerasbnn.run`. This module puts them together, and keeps the names other code calls importable from here: `check_config`,
`evaluate`, `train_teachers`, `convert_and_benchmark`, `write_report`, `seed_everything`,
`arms`, `teacher_bits`, `STUDENT_INITS` and `DELTA_INITS`.
"""

import os

import keras
import numpy as np

from kerasbnn import distribution
from kerasbnn import comparison, methods
from kerasbnn.models.precision import resolve_precision
from kerasbnn.run.advice import nan_advice
from kerasbnn.run.arms import arms, teacher_bits
from kerasbnn.run.checks import (  # noqa: F401 (STUDENT_INITS, DELTA_INITS: re-exported)
    DELTA_INITS, STUDENT_INITS, check_config, check_value)
from kerasbnn.run.convert import convert_and_benchmark
from kerasbnn.run.data import note_smaller_data, run_data, seed_everything
from kerasbnn.run.report import write_report
from kerasbnn.run.teachers import build, evaluate, train_teachers
from kerasbnn.run_dir import check_run_dir, open_run_dir, recording_config_errors


def _setup(config, resume, print_fn=print, builds=True, names=None):
    """Checks the whole config and the run directory, loads the data, opens the run directory
    (nothing is written before the checks pass and the data is there)."""
    worker = distribution.worker(config.distribute)  # TF_CONFIG is checked before training
    if config.distribute == "multiworker":
        distribution.multi_worker_strategy()  # must exist before the first TensorFlow op
    info = check_config(config, builds=builds, names=names)
    check_run_dir(worker.run_dir(config.run_dir))
    seed_everything(config)
    data = run_data(config, info)
    note_smaller_data(config, info, data.train(config.seed), print_fn)
    run = open_run_dir(config, resume, worker, print_fn)  # only once the data is known to be there
    return run, info, data


def _job(config, run, info, data, teachers, print_fn):
    """The `StudentJob` of one arm, on fresh training batches of the run's seed."""
    return methods.StudentJob(
        config, run, info, data.train(config.seed), data.val, teachers,
        build=lambda bits, **options: build(config, info, bits, **options),
        evaluate=lambda model: evaluate(model, data.test),
        advice=nan_advice(config, "student"), print_fn=print_fn,
        validate=(lambda model: data.val_result(model)), bn_ds=data.plain(),
        train_indexed=lambda: data.train(config.seed, index=True),
        precise_bn_ds=data.plain)


def _train_methods(config, names, resume, print_fn, checked=None):
    """Opens the run, trains the teachers `names` need, then each method's student; the
    config's keys are checked against the methods `checked` (default `names`)."""
    builds = any(methods.METHODS.get(name).zoo for name in names)
    run, info, data = _setup(config, resume, print_fn, builds=builds,
                             names=names if checked is None else checked)
    with recording_config_errors(run), distribution.scope(config.distribute, print_fn):
        bits = teacher_bits(config, names)
        teachers = train_teachers(config, run, info, data, print_fn, bits) if bits else {}
        for name in names:  # paired arms: the same seed, initial weights, batches and images
            seed_everything(config)
            arm = comparison.arm_config(config, name, names, print_fn)
            methods.run_method(name, _job(arm, run, info, data, teachers, print_fn))
        warning = comparison.unequal_images(run, names)
        if warning:
            print_fn(warning)
    return run, info, data.test


def run_training(config, bits, *, resume=False, print_fn=print):
    """Trains one model of `config.model.arch` at `bits` (1: the binary student, no KD)."""
    if bits == 1:
        run, _, _ = _train_methods(config, ["none"], resume, print_fn, checked=arms(config))
        return keras.models.load_model(run.student("none"))
    check_value("--bits", resolve_precision, bits, config.teachers.quantizer)
    run, info, data = _setup(config, resume, print_fn)
    with recording_config_errors(run), distribution.scope(config.distribute, print_fn):
        return train_teachers(config, run, info, data, print_fn, bits_list=[bits])[bits]


def run_compare(config, *, resume=False, print_fn=print):
    """The training half of `run_pipeline`: the teachers, then every arm of `arms(config)`
    on the same teachers, data and seed (paired), without conversion or report. Returns
    `{"teachers": {bits: results}, "students": {method: results}}` from the run directory's
    results JSON (test `accuracy`; `val_accuracy` with `data.val_split`)."""
    names = arms(config)
    run, _, _ = _train_methods(config, names, resume, print_fn)
    return {"teachers": {b: run.read_json(run.teacher_step(b))
                         for b in teacher_bits(config, names)},
            "students": {name: run.read_json(run.student_step(name)) for name in names}}


def run_method(config, *, resume=False, print_fn=print):
    """`kerasbnn distill --method M`: the teachers M needs, then M's student; returns its
    results (`results/student_<M>.json`)."""
    method = config.distill.method
    run, _, _ = _train_methods(config, [method], resume, print_fn)
    return run.read_json(run.student_step(method))


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
        kerasbnn.training.DivergenceError: a loss grew past `divergence_factor` times its
            first value; as for a NaN.
        OSError: a file of the run could not be written (a full disk, a folder made
            read-only); what is written stays whole, and `--resume` continues.
        kerasbnn.export.ExportError: conversion or its verification failed; the trained
            models stay, and `--resume` (e.g. with `convert.verify=false`) retries it.
    """
    names = arms(config)
    run, info, val_ds = _train_methods(config, names, resume, print_fn)
    if not run.is_chief:
        print_fn(f"[distribute] training done; this worker's files are in {run.root}, and the "
                 "chief converts, benchmarks and writes the report.")
        return None
    # Conversion works on plain (not distributed) copies, loaded back from the run directory.
    load = keras.models.load_model
    named = {"float_teacher": load(run.teacher(32))
             if os.path.exists(run.teacher(32)) else build(config, info, 32)}
    named.update({name: load(run.student(name)) for name in names})
    sample = np.concatenate([x for x, _ in val_ds.take(1)])[:4]
    convert_and_benchmark(config, run, sample, named, print_fn)
    path, accuracy = write_report(config, run, print_fn)
    for name, value in accuracy.items():
        print_fn(f"  {name:>16}: {100 * value:.2f}%")
    print_fn(f"Report written to {path}")
    return path
