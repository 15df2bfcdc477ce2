"""Distillation methods as plug-ins of the pipeline: one registry, one job, one result format.

Every method trains one student of the run (binary; pkkd: an adder network) and leaves the
same things behind: `students/<method>.keras` (written atomically),
`results/student_<method>.json` with at least `accuracy` (top-1 on the evaluation split,
`pipeline.evaluate`), `epochs`, `learning_rate` and `schedule`, CSV logs and a
`kerasbnn.training.EpochBackup` named `student_<method>` (`student_<method>/<phase>` for each phase
of a schedule, `StudentJob.run_phases`), so `--resume` continues them from the last finished
epoch or phase, and a finished student is never trained again. The pipeline (`kerasbnn.pipeline`) owns the
data, the seeds, the teachers, the evaluation and the report; a method only says how its
student learns.

| key | student | teachers |
|---|---|---|
| `none` | the binary student, cross-entropy only (the baseline) | none |
| `kd` | classic KD (Hinton) plus FitNet-style hints at the zoo's taps | the float teacher |
| `at` | attention transfer (Zagoruyko & Komodakis) plus KD, as `TermsDistiller` terms | the float teacher |
| `mad` | multi-bit adaptive distillation (Nie et al. 2021) | every `teachers.bits` |
| `average` | CMT-KD's "average teacher" baseline (§4.2): plain KD from the teachers' mean softmax | every `teachers.bits` |
| `cmtkd` | collaborative multi-teacher KD (Zhao et al. 2022), `distill.cmtkd` | its own, trained with it |
| `progressive` | the thesis' block-wise methods I/II/III, `distill.progressive` | the float teacher |
| `pkkd` | the adder twin of `model.arch`, kernel-based progressive KD, `distill.pkkd` | its CNN twin, trained with it |

This module imports Keras only when a method runs, so the command line lists the methods
without loading TensorFlow. A new method is one module (of this package, or of your own code,
imported before the config is checked) plus one test: a function decorated with
`@method("name", teachers=..., options=..., depends_on=..., check=..., report=...)` that takes
a `StudentJob` and returns the trained student and extra result fields (`attention.py` is an
example: attention transfer as terms of a `TermsDistiller`). Its own options are a dataclass
(`options=`): the config section `distill.<name>`, checked like the rest of the config (types,
each field's `metadata` bounds and choices, unknown keys with the closest valid one) and read
with `method_options(config, "name")`; so any set of methods, each with its own section, can be
compared in one run. What it adds to the report (lines, plots) is its `report` hook;
tests/methods/plugin_example_test.py registers such a method in a test file and compares it
beside `mad`. A method that trains the run's student through
`StudentJob.train_student` (`two_step=True`) takes `student.schedule`: one step, or ReActNet's
two steps, real-valued weights first (phases `student_<method>/step1`, `/step2`; step 2's
distiller starts from what step 1's learned: `TeacherStudent.own_weights`). Every
method trains under `distribute: mirrored`: its distiller scales all of its loss terms alike
across replicas. The pipeline, the command line's choices,
the config checks and `--resume` read everything else from the registry.
"""

from kerasbnn.methods.job import StudentJob, run_method
from kerasbnn.methods.registry import (
    METHODS,
    check_sections,
    config_keys,
    given_options,
    method,
    method_options,
    needs_teachers,
    option_keys,
    options_class,
    section,
    student_epochs,
    student_keys,
    student_network,
)

__all__ = ["METHODS", "StudentJob", "check_sections", "config_keys", "given_options", "method",
           "method_options", "needs_teachers", "option_keys", "options_class", "run_method",
           "section", "student_epochs", "student_keys", "student_network"]

from kerasbnn.methods import (  # noqa: E402,F401  (each module registers its method)
    attention,
    average,
    baseline,
    cmtkd,
    kd,
    mad,
    pkkd,
    progressive,
)
