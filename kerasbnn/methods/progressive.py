"""`progressive` and `pkkd`: methods whose runners train their own teacher and student.

They read `distill.options` (`kerasbnn.distill.run_progressive` / `run_pkkd` keys) and the
run's data settings; their students come back through `students/<method>.keras`.
"""

import os

from kerasbnn.methods import method


def own_runner(job, name, function, options):
    """Runs `function` (a config-dict runner) on the run's data settings; returns its student
    and its results (without the accuracy, which the pipeline measures itself)."""
    import keras

    c = job.config
    d = c.data
    output = job.run.path("students", f".{name}_runner.keras")
    options = {"dataset": d.name, "batch_size": d.batch_size, "train_limit": d.train_limit,
               "test_limit": d.val_limit, "seed": c.seed, "output": output, **options}
    job.print_fn(f"[distill] {name} with {options}")
    result = function(options)
    student = keras.models.load_model(output)
    os.remove(output)
    return student, {k: v for k, v in result.items() if k not in ("test_accuracy", "seed")}


def _option_keys():
    from kerasbnn.distill import progressive

    return progressive.RUN_DEFAULTS


@method("progressive", options=_option_keys, depends_on=("distill.options",), zoo=False,
        distributes=False)
def train_progressive(job):
    """The thesis' block-wise methods (`kerasbnn.distill.run_progressive`, `distill.options`)."""
    from kerasbnn.distill import run_progressive

    options = {"model": job.config.model.arch, **job.config.distill.options}
    return own_runner(job, "progressive", run_progressive, options)
