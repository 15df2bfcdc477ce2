"""The run directory's layout: the one place that spells where each file of a run lives.

Every function returns a path relative to the run directory, with "/" between folders (the
form `kerasbnn.resume` records in its steps); `kerasbnn.run_dir.RunDir` joins them to its
root. A step's name (`teacher_step`, `student_step`, `convert_step`) is also the name of its
results JSON (`results`), its backup (`backup`) and its training log (`log`).

    config.yaml                          CONFIG: the config used
    teachers/w<b>a<b>.keras              teacher(b)
    students/<method>.keras              student(method)
    tflite/<name>.tflite                 tflite(name)
    results/<name>.json                  results(name), e.g. results(teacher_step(b))
    results/<name>.csv                   history(name), e.g. delta_history(tag)
    backup/<step>/                       backup(step); finished_phases(method)
    logs/<step>.csv, tensorboard/<step>  log(step), tensorboard(step)
    plots/<name>.png, report.md          plot(name), REPORT
    workers/<type>_<index>/              worker(type, index): a multi-worker run's others

This module imports nothing of kerasbnn, so that any module may use it.
"""

import os
import re

#: The config a run was started with.
CONFIG = "config.yaml"
#: The report comparing the run's models.
REPORT = "report.md"
#: The results JSON present while the last run stopped on a config error.
FAILED = "failed"
#: The name of the float teacher's conversion (`convert_step`).
FLOAT_TEACHER = "float_teacher"

_TEACHERS, _STUDENTS, _BACKUP = "teachers", "students", "backup"
_TEACHER_FILE, _TEACHER_STEP = r"w(\d+)a\1\.keras", r"teacher_w(\d+)a\1"


def teacher_step(bits):
    """`teacher_w<b>a<b>`: the name of the `bits`-bit teacher's training step."""
    return f"teacher_w{bits}a{bits}"


def teacher(bits):
    """`teachers/w<b>a<b>.keras`: the trained `bits`-bit teacher."""
    return f"{_TEACHERS}/w{bits}a{bits}.keras"


def student_step(method, phase=None):
    """`student_<method>`, or `student_<method>/<phase>` for one phase of a schedule: the name
    of a student's training step."""
    return f"student_{method}" + (f"/{phase}" if phase else "")


def student(method):
    """`students/<method>.keras`: `method`'s trained binary student ("none": no KD)."""
    return f"{_STUDENTS}/{method}.keras"


def convert_step(name):
    """`convert_<name>`: the name of model `name`'s conversion (its results JSON)."""
    return f"convert_{name}"


def results(name):
    """`results/<name>.json`: the results of step `name` (metrics, a conversion report)."""
    return f"results/{name}.json"


def history(name):
    """`results/<name>.csv`: a history logged while a step trains (e.g. CMT-KD's π)."""
    return f"results/{name}.csv"


def delta_history(tag):
    """`results/delta_history_<tag>.csv`: the fusion weights delta of method run `tag`."""
    return history(f"delta_history_{tag}")


def tflite(name):
    """`tflite/<name>.tflite`: model `name` converted by LCE."""
    return f"tflite/{name}.tflite"


def backup(step):
    """`backup/<step>`: the `EpochBackup` of a step cut mid-training (kept until the step's
    artefact is saved)."""
    return f"{_BACKUP}/{step}"


def finished_phases(method):
    """`backup/student_<method>/finished`: the weights of the phases of `method`'s schedule
    that are done (removed with the step's backup)."""
    return f"{backup(student_step(method))}/finished"


def log(step):
    """`logs/<step>.csv`: the training log of a step (one row per epoch)."""
    return f"logs/{step}.csv"


def tensorboard(step):
    """`tensorboard/<step>`: the TensorBoard log of a step."""
    return f"tensorboard/{step}"


def plot(name):
    """`plots/<name>.png`: a plot of the report."""
    return f"plots/{name}.png"


def worker(task_type, index):
    """`workers/<type>_<index>`: the run directory of a multi-worker run's other worker."""
    return f"workers/{task_type}_{index}"


def teacher_bits(root):
    """The bits of every teacher that run directory `root` holds, trained or cut mid-training
    (a `teacher` file or a `backup` of its `teacher_step`)."""
    bits = set()
    for folder, pattern in ((_TEACHERS, _TEACHER_FILE), (_BACKUP, _TEACHER_STEP)):
        if os.path.isdir(os.path.join(root, folder)):
            bits |= {int(m.group(1)) for name in os.listdir(os.path.join(root, folder))
                     if (m := re.fullmatch(pattern, name))}
    return bits
