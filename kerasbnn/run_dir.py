"""The run directory: paths, atomic JSON results, and opening it for a new or resumed run.

Layout (written by `kerasbnn.pipeline`; `RunDir` has one method per kind of path, spelled
in `kerasbnn.run.layout` only):
    config.yaml                  the config used
    teachers/w<b>a<b>.keras      the trained teachers
    students/<method>.keras      binary students, one per distillation method ("none": no KD)
    tflite/*.tflite              LCE flatbuffers (float teacher, every student)
    results/*.json               per-step metrics, conversion reports, latencies
    results/failed.json          present while the last run stopped on a config error
    backup/<step>/               `EpochBackup` of a step cut mid-training (kept until the
                                 step's artefact is saved)
    logs/*.csv, tensorboard/     training logs
    plots/*.png, report.md       the report
"""

import contextlib
import dataclasses
import json
import os
import tempfile

from kerasbnn import config as run_config
from kerasbnn import data as datasets
from kerasbnn import distribution
from kerasbnn import resume as resume_plan
from kerasbnn.methods import student_keys
from kerasbnn.run import layout

__all__ = ["RunDir", "RunDirectoryError", "UnwritableRunDirectoryError", "check_run_dir",
           "open_run_dir", "recording_config_errors"]


class RunDirectoryError(ValueError):
    """The run directory holds another run and `resume` was not asked for, or `resume` was
    asked with changes that would invalidate the steps already done there."""


class UnwritableRunDirectoryError(RunDirectoryError):
    """The run directory cannot be created or written (the command line exits with 4)."""


class RunDir:
    """Paths and atomic JSON results inside one run directory.

    Each path method returns an absolute path under `root` (its relative form is the
    function of the same name in `kerasbnn.run.layout`). The methods for files create their
    folder, ready to write; those for folders (`backup`, `finished_phases`) create nothing.
    """

    def __init__(self, root, is_chief=True):
        self.root = os.fspath(root)
        self.is_chief = is_chief  # False: a multi-worker run's other worker, which only trains

    def path(self, *parts):
        """`root/<parts...>`, its folder created."""
        path = os.path.join(self.root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def teacher(self, bits):
        """`teachers/w<b>a<b>.keras`: the trained `bits`-bit teacher."""
        return self.path(layout.teacher(bits))

    def teacher_step(self, bits):
        """`teacher_w<b>a<b>`: the `bits`-bit teacher's step, the name of its results JSON,
        its backup and its log."""
        return layout.teacher_step(bits)

    def student(self, method):
        """`students/<method>.keras`: `method`'s trained binary student ("none": no KD)."""
        return self.path(layout.student(method))

    def student_step(self, method, phase=None):
        """`student_<method>` (`student_<method>/<phase>` for one phase of a schedule): the
        student's step, the name of its results JSON, its backup and its log."""
        return layout.student_step(method, phase)

    def convert_step(self, name):
        """`convert_<name>`: model `name`'s conversion, the name of its results JSON."""
        return layout.convert_step(name)

    def results(self, name):
        """`results/<name>.json`: the results of step `name`, through `write_json`."""
        return self.path(layout.results(name))

    def history(self, name):
        """`results/<name>.csv`: a history logged while a step trains (e.g. CMT-KD's π)."""
        return self.path(layout.history(name))

    def delta_history(self, tag):
        """`results/delta_history_<tag>.csv`: the fusion weights of method run `tag`."""
        return self.path(layout.delta_history(tag))

    def tflite(self, name):
        """`tflite/<name>.tflite`: model `name` converted by LCE."""
        return self.path(layout.tflite(name))

    def backup(self, step):
        """`backup/<step>`: the `EpochBackup` folder of a step cut mid-training."""
        return os.path.join(self.root, layout.backup(step))

    def finished_phases(self, method):
        """`backup/student_<method>/finished`: the weights of the finished phases of
        `method`'s schedule."""
        return os.path.join(self.root, layout.finished_phases(method))

    def log(self, step):
        """`logs/<step>.csv`: the training log of a step."""
        return self.path(layout.log(step))

    def plot(self, name):
        """`plots/<name>.png`: a plot of the report."""
        return self.path(layout.plot(name))

    def report(self):
        """`report.md`: the report comparing the run's models."""
        return self.path(layout.REPORT)

    def write_json(self, name, value):
        """Writes `value` to `results/<name>.json` atomically."""
        path = self.results(name)
        with open(path + ".tmp", "w") as f:
            json.dump(value, f, indent=2, default=float)
        os.replace(path + ".tmp", path)

    def discard(self, name):
        """Removes `results/<name>.json`, a result made from an artefact that was just redone."""
        path = os.path.join(self.root, layout.results(name))
        if os.path.exists(path):
            os.remove(path)

    def read_json(self, name):
        """The value in `results/<name>.json`, or None when there is none."""
        path = os.path.join(self.root, layout.results(name))
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)


def check_run_dir(path):
    """Checks, before anything is written, that files can be created in run directory `path`.

    Raises:
        UnwritableRunDirectoryError: naming the path, why, and the fix.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    fix = "Set run_dir to a directory you can write, e.g. --set run_dir=runs/new."
    if not os.path.isdir(existing):
        raise UnwritableRunDirectoryError(
            f"run_dir {path!r} cannot be created: {existing} is a file, not a directory. {fix}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UnwritableRunDirectoryError(
            f"run_dir {path!r} is not writable ({existing}: {error.strerror or error}). {fix}"
        ) from None


def open_run_dir(config, resume, worker=distribution.Worker(), print_fn=print):
    """Creates the run directory, or reopens it for `resume` (or after a config error) when the
    changes from its `config.yaml` leave its finished steps valid (`kerasbnn.resume`); writes
    the config. Returns the `RunDir`.

    Raises:
        RunDirectoryError: a run is there and `resume` is False, or the changes would
            invalidate finished steps (nothing is changed then).
    """
    # A multi-worker run's other workers get their own folder: no two processes write one file.
    config = dataclasses.replace(config, run_dir=worker.run_dir(config.run_dir))
    run = RunDir(config.run_dir, is_chief=worker.is_chief)
    saved = os.path.join(run.root, layout.CONFIG)
    if os.path.exists(saved):
        failed = run.read_json(layout.FAILED) or {}
        if not resume and failed.get("kind") != "config":
            raise RunDirectoryError(
                f"{run.root} already holds a run. Pass --resume to continue it (changes that "
                "leave its finished steps valid are accepted), or set another run_dir "
                "(e.g. --set run_dir=runs/new)."
            )
        if not resume:
            print_fn(f"[run] the last run in {run.root} stopped on a config error "
                     f"({failed.get('message', '')}); continuing it with this config")
        plan = resume_plan.plan(run.root, run_config.load(saved), config, student_keys())
        if plan.conflicts:
            raise RunDirectoryError(resume_plan.refusal(plan))
        resume_plan.report(plan, print_fn)
        resume_plan.apply(plan)  # before the new config: a later resume redoes them too
        if failed and run.is_chief:
            os.remove(os.path.join(run.root, layout.results(layout.FAILED)))
    else:
        _refuse_orphans(run.root)
        os.makedirs(run.root, exist_ok=True)
    run_config.dump(config, saved)
    return run


def _refuse_orphans(root):
    """Raises `RunDirectoryError` when `root` holds a run's steps but no `config.yaml`: the
    settings they were made with are unknown, so neither reusing them nor replacing them
    silently is right."""
    found = resume_plan.orphans(root, student_keys()) if os.path.isdir(root) else []
    if found:
        shown = ", ".join(os.path.relpath(p, root) for p in found[:4])
        raise RunDirectoryError(
            f"{root} holds the files of a run ({shown}{', ...' if len(found) > 4 else ''}) "
            "but no config.yaml, so the settings they were made with are unknown and they "
            "cannot be reused. Put its config.yaml back and resume, or start a new run "
            "(--set run_dir=runs/new), or remove them: rm -r " + " ".join(found))


@contextlib.contextmanager
def recording_config_errors(run):
    """Marks the run directory when a config error stops the run after it was opened, so that
    a rerun with the fixed config needs no --resume and keeps the finished steps."""
    try:
        yield
    except ValueError as error:
        if run.is_chief and not isinstance(error, (datasets.DataNotFoundError,
                                                   UnwritableRunDirectoryError)):
            run.write_json(layout.FAILED, {"kind": "config", "message": str(error)})
        raise
