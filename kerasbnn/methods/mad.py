"""`mad`: multi-bit adaptive distillation (Nie et al., BMVC 2021) from every teacher.

The fusion logits theta (delta = softmax(theta), eqs. 7-8) train by `distill.delta_optimizer`:
SGD at `distill.delta_learning_rate` (the default; `delta_optimizer`), or the student's Adam
at `distill.delta_lr_scale` times its rate (MAD's one optimizer when the scale is 1).
"""

import os

from kerasbnn.methods.multi_teacher_student import (LOSS_KEYS, TEACHER_KEYS, check_loss,
                                                    multi_teacher_student)
from kerasbnn.methods.registry import method

#: The config keys of how MAD's fusion weights learn.
DELTA_KEYS = ("distill.fusion", "distill.delta_lr_scale.", "distill.delta_init",
              "distill.delta_objective", "distill.delta_optimizer", "distill.delta_learning_rate")


def _check_delta_optimizer(config):
    """`distill.delta_lr_scale` is MAD's only under `delta_optimizer: adam` (CMT-KD reads
    `features` whatever it is): a changed one with `sgd` is refused, naming the fix."""
    from kerasbnn.config import ConfigError, DeltaLRConfig

    d, default = config.distill, DeltaLRConfig()
    keys = ("logits",) if "cmtkd" in (d.method, *d.compare) else ("logits", "features")
    changed = [k for k in keys if getattr(d.delta_lr_scale, k) != getattr(default, k)]
    if d.delta_optimizer == "sgd" and changed:
        raise ConfigError(
            f"distill.delta_lr_scale.{changed[0]} scales delta's rate under "
            "distill.delta_optimizer=adam; with sgd, set its rate with "
            "distill.delta_learning_rate, or set distill.delta_optimizer=adam.")


def _check(config):
    """The loss settings (`check_loss`) and `_check_delta_optimizer`."""
    check_loss(config)
    _check_delta_optimizer(config)


def _delta_lines(config, run):
    """MAD's fusion weights at the end of training, per distillation point, and their largest
    move from where they started (the history's first row; the plot shows their path); then
    the logits' delta at the end of every epoch, and what trained it."""
    path = run.delta_history("mad")
    if not os.path.exists(path):
        return []
    from kerasbnn.distill.plots import read_delta_csv

    result = run.read_json(run.student_step("mad"))
    rows, bits = read_delta_csv(path), result.get("teachers") or []
    start, end = rows[0], rows[-1]
    moved = max(abs(end[k] - start[k]) for k in end if k != "epoch")  # start: epoch -1
    moved = f" (largest move from the start: {moved:.2f})" if start["epoch"] == -1 else ""
    points = dict.fromkeys(k.rsplit("/t", 1)[0][len("importance/"):] for k in end if k != "epoch")
    lines = [f"MAD's delta for the {'/'.join(map(str, bits))}-bit teachers, after "
             f"training{moved}:", ""]
    lines += [f"- {p}: " + " / ".join(f"{end[f'importance/{p}/t{m}']:.3f}"
                                      for m in range(len(bits))) for p in points]
    d = config.distill
    how = {"sgd": f"SGD at rate {d.delta_learning_rate:g}",
           "adam": f"the student's Adam at {d.delta_lr_scale.logits:g}x its rate"}
    lines += ["", f"The logits' delta at the end of each epoch (theta trained by "
                  f"{how[result.get('delta_optimizer', 'adam')]}):", ""]
    for row in rows:
        if float(row["epoch"]).is_integer() and "importance/logits/t0" in row:
            when = "start" if row["epoch"] < 0 else f"epoch {int(row['epoch']) + 1}"
            lines.append(f"- {when}: " + " / ".join(
                f"{row[f'importance/logits/t{m}']:.3f}" for m in range(len(bits))))
    return [*lines, ""]


def _report(config, run):
    """What MAD adds to the report: its fusion weights (`_delta_lines`) and their plot."""
    return _delta_lines(config, run), [("delta mad", "delta_mad")]


@method("mad", teachers=None, two_step=True, check=_check, report=_report,
        depends_on=("teachers.bits", *TEACHER_KEYS, "student.", *LOSS_KEYS, *DELTA_KEYS))
def train_mad(job):
    """MAD from every teacher of `teachers.bits`, fusion `distill.fusion`."""
    bits = tuple(job.config.teachers.bits)
    job.print_fn(f"[distill] mad: binary student from {len(bits)} teachers {list(bits)}")
    return multi_teacher_student(job, "mad", bits, job.config.distill.fusion)
