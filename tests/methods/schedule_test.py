"""`student.schedule: two_step`: ReActNet's two steps (real-valued weights, then binary) for
every arm that trains `StudentJob.student()`, resumable between the steps, refused by the
methods that build their own student."""

import json
import re
import types

import keras
import numpy as np
import pytest

from kerasbnn import config, methods, pipeline
from kerasbnn.run import report as run_report

TINY = ["distill.feature_weight=0.2", "data.train_limit=64", "data.val_limit=32", "data.batch_size=32",
        "model.width_multiplier=0.25", "teachers.bits=[32, 2]", "teachers.epochs=1",
        "teachers.float_epochs=1", "teachers.bn_batches=1", "student.epochs=1",
        "student.schedule=two_step", "model.block=basic"]  # the thesis' layer names
FIT = methods.StudentJob.fit


def _config(tmp_path, *overrides):
    return config.load("examples/configs/demo.yaml",
                       [f"run_dir={tmp_path / 'run'}", *TINY, *overrides])


def _weights(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _quantized(model):
    """The names of the layers whose weights are quantized."""
    return [layer.name for layer in model.layers
            if getattr(layer, "kernel_quantizer", None) is not None]


class Killed(Exception):
    """Stands for a kill between the two steps."""


def _recording(monkeypatch, steps, stop_at=None, passes=None):
    """Records each student phase `fit` trains: `(phase, the model inside, its weights
    before, after)`, and in `passes` each phase's first pass over the data; raises `Killed`
    instead of training phase `stop_at`."""

    def fit(job, model, method, callbacks=(), *, phase=None, epochs=None, data=None,
            first_pass=0):
        if phase == stop_at:
            raise Killed(phase)
        if passes is not None:
            passes[phase] = first_pass
        inner = getattr(model, "student", model)
        before = _weights(job._built(inner))
        history = FIT(job, model, method, callbacks, phase=phase, epochs=epochs, data=data,
                      first_pass=first_pass)
        steps.append((phase, inner, before, _weights(inner)))
        return history

    monkeypatch.setattr(methods.StudentJob, "fit", fit)


@pytest.mark.parametrize("name", ["none", pytest.param("mad", marks=pytest.mark.slow)])
def test_two_step_trains_real_weights_then_the_binary_student_from_them(
        tmp_path, monkeypatch, shared_teachers, name):
    steps, passes = [], {}
    _recording(monkeypatch, steps, passes=passes)
    lines = []
    values = _config(tmp_path, f"distill.method={name}", shared_teachers)
    result = pipeline.run_method(values, print_fn=lines.append)
    assert [phase for phase, *_ in steps] == ["step1", "step2"]
    # step 2 sees new orders: the passes after step 1's
    assert passes == {"step1": 0, "step2": values.student.epochs}
    (_, first, first_before, first_after), (_, second, second_before, _) = steps
    assert not _quantized(first)  # step 1: real-valued weights
    assert first.get_layer("stage1_block1_conv1").input_quantizer is not None  # binary inputs
    assert _quantized(second)  # step 2: the binary student
    assert not all(np.array_equal(a, b) for a, b in zip(first_before, first_after))
    for a, b in zip(first_after, second_before):  # step 2 starts from step 1's weights
        np.testing.assert_array_equal(a, b)
    run = tmp_path / "run"
    for step in ("step1", "step2"):
        assert (run / "logs" / f"student_{name}" / f"{step}.csv").exists()
    assert any("ReActNet's two steps of 1 epoch(s)" in line for line in lines)
    assert result["schedule"] == "two_step" and result["epochs"] == 1
    saved = keras.models.load_model(run / "students" / f"{name}.keras")
    assert _quantized(saved) == _quantized(second)
    assert not (run / "backup" / f"student_{name}").exists()
    if name == "mad":
        assert (run / "results" / "delta_history_mad_step1.csv").exists()
        assert (run / "results" / "delta_history_mad.csv").exists()
        assert set(result["deltas"]) >= {"logits"}


def test_a_run_killed_after_step_1_resumes_with_step_2_only(tmp_path, monkeypatch,
                                                            shared_teachers):
    values = _config(tmp_path, "distill.method=none", shared_teachers)
    steps = []
    _recording(monkeypatch, steps, stop_at="step2")
    with pytest.raises(Killed):
        pipeline.run_method(values)
    (phase, _, _, step_one), = steps
    assert phase == "step1"
    run = tmp_path / "run"
    assert (run / "backup" / "student_none" / "finished" / "step1.npz").exists()
    steps.clear()
    _recording(monkeypatch, steps)
    lines = []
    result = pipeline.run_method(values, resume=True, print_fn=lines.append)
    assert [phase for phase, *_ in steps] == ["step2"]  # step 1 is not trained again
    assert any("phases step1 finished" in line for line in lines)
    for a, b in zip(step_one, steps[0][2]):  # step 2 starts from the saved step 1
        np.testing.assert_array_equal(a, b)
    assert result["schedule"] == "two_step"
    saved = json.loads((run / "results" / "student_none.json").read_text())
    steps.clear()
    assert pipeline.run_method(values, resume=True) == saved  # finished: nothing trains
    assert steps == []


def test_the_report_says_which_schedule_ran(tmp_path):
    assert "students ReActNet's two steps of 1 epochs each (real-valued weights, then binary)" \
        in run_report._budget_line(_config(tmp_path))
    assert "students 1 epochs from float init" in run_report._budget_line(
        _config(tmp_path, "student.schedule=one_step"))


def test_the_methods_that_train_the_pipelines_student_take_it():
    takes = {name for name in methods.METHODS.keys() if methods.METHODS.get(name).two_step}
    assert takes == {"none", "kd", "at", "mad", "average"}


@pytest.mark.parametrize("overrides, refused", [
    (["distill.method=cmtkd", "teachers.epochs=2", "teachers.float_epochs=null"], "cmtkd"),
    (["distill.method=progressive", "teachers.bits=[32]"], "progressive"),
    (["distill.method=pkkd"], "pkkd"),
    (["distill.compare=[none, mad, progressive]"], "progressive"),
])
def test_methods_that_build_their_own_student_refuse_it_before_anything_trains(
        tmp_path, overrides, refused):
    values = _config(tmp_path, *overrides)
    message = (f"student.schedule=two_step trains the student that StudentJob.student() "
               f"builds, but {refused} builds its own student: set student.schedule=one_step, "
               "or train only methods that take it (")
    run = pipeline.run_compare if values.distill.compare else pipeline.run_method
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        run(values)
    assert not (tmp_path / "run").exists()


def _job(schedule):
    """A `StudentJob` whose student, `fit` and phases are stand-ins: what `train_student`
    does with `data`, and nothing else."""
    import types

    values = types.SimpleNamespace(student=types.SimpleNamespace(schedule=schedule, epochs=1))
    job = methods.StudentJob(config=values, run=None, info=None, train_ds=None, val_ds=None,
                             teachers={}, build=None, evaluate=None, print_fn=lambda line: None)
    job.student = lambda: "student"
    job.fitted = []
    job.fit = lambda model, method, callbacks, phase=None, data=None, first_pass=0: (
        job.fitted.append((phase, data)))
    return job


@pytest.mark.parametrize("schedule, finished, fitted", [
    ("one_step", 0, [(None, "batches")]),
    ("two_step", 0, [("step1", "batches"), ("step2", "batches")]),
    ("two_step", 1, [("step2", "batches")]),
    ("two_step", 2, []),
])
def test_lazy_training_data_is_made_once_and_only_when_a_step_trains(
        monkeypatch, schedule, finished, fitted):
    from kerasbnn.distill import schedules

    job = _job(schedule)
    monkeypatch.setattr(schedules, "two_step_phases", lambda student, train: [
        ("step1", lambda: train("copy", 1)), ("step2", lambda: train(student, 2))])
    job.run_phases = lambda method, model, phases: [run() for _, run in phases[finished:]]
    made = []
    job.train_student("mad", lambda model, step: (model, []),
                      data=lambda: made.append(1) or "batches")
    assert job.fitted == fitted
    assert len(made) == (1 if fitted else 0)  # the teachers' pass: once, or never


@pytest.mark.parametrize("data", [None, [("x", "y")]])  # train_ds, or batches as fit takes them
def test_training_data_given_as_batches_is_used_as_is(data):
    job = _job("one_step")
    job.train_student("none", lambda model, step: (model, []), data=data)
    assert job.fitted == [(None, data)] and job.fitted[0][1] is data


def _mad_job(tmp_path, lines):
    """A real `StudentJob` training `mad` with two_step on tiny models and 16 images."""
    import tensorflow as tf

    from kerasbnn.run_dir import RunDir
    from tests.distill.conftest import tiny_model  # taps stage1_out and stage2_out

    values = config.load(None, ["student.schedule=two_step", "student.epochs=1",
                                "student.learning_rate=0.05", "teachers.bits=[32, 2]",
                                "distill.teacher_logits=computed"])
    rng = np.random.default_rng(0)
    batches = tf.data.Dataset.from_tensor_slices((
        rng.normal(size=(16, 8, 8, 3)).astype("float32"), rng.integers(0, 5, 16))).batch(8)
    job = methods.StudentJob(
        config=values, run=RunDir(tmp_path / "run"), info=types.SimpleNamespace(
            input_shape=(8, 8, 3)), train_ds=batches, val_ds=batches,
        teachers={32: tiny_model("t32", seed=1), 2: tiny_model("t2", seed=2)}, build=None,
        evaluate=None, print_fn=lines.append)
    job.student = lambda: tiny_model("student", binary=True)
    return job


def _own(model):
    """The method's own weights of what `fit` trains (none for a plain model)."""
    weights = model.own_weights() if hasattr(model, "own_weights") else []
    return [keras.ops.convert_to_numpy(w).copy() for w in weights]


@pytest.mark.parametrize("killed", [False, True])
def test_step_two_starts_from_the_weights_step_one_left_in_the_distiller(
        tmp_path, monkeypatch, killed):
    """`train_student` hands step 1's own weights (here set by a stand-in `fit`) to step 2's
    distiller, in one run and after a kill between the steps (the resumed run builds every
    distiller afresh); a plain model (`none`) has none to hand over."""
    from kerasbnn.distill import MultiTeacherDistiller

    own, lines = {}, []
    job = _mad_job(tmp_path, lines)

    def fit(job, model, method, callbacks=(), *, phase=None, epochs=None, data=None,
            first_pass=0):
        if killed and phase == "step2" and "step1" in own:
            raise Killed(phase)
        before = _own(model)
        if phase == "step1" and method == "mad":  # what step 1 learns
            model.set_own_weights([np.random.default_rng(7).normal(size=w.shape)
                                   for w in model.own_weights()])
        own[phase] = before, _own(model)

    def distiller(model, step):
        teachers = list(job.teachers.values())
        return MultiTeacherDistiller(model, teachers, feature_taps=["stage2_out"]), []

    monkeypatch.setattr(methods.StudentJob, "fit", fit)
    if killed:
        with pytest.raises(Killed):
            job.train_student("mad", distiller)
        job = _mad_job(tmp_path, lines)
        killed = False
    job.train_student("mad", distiller)
    (_, end1), (begin2, _) = own["step1"], own["step2"]
    assert len(end1) == 4  # theta of the logits and the tap, the adapter's kernel and bias
    for a, b in zip(end1, begin2):
        np.testing.assert_array_equal(a, b)
    assert "[schedule] mad: step 2 starts from step 1's fusion_logits, fusion_stage2_out, " \
        "adapter_stage2_out" in lines
    job.train_student("none", lambda model, step: (model, []))  # nothing of its own
    assert own["step2"] == ([], [])


@pytest.mark.slow
def test_step_two_of_mad_starts_from_step_ones_fusion_logits_and_adapters(
        tmp_path, monkeypatch):
    """MAD trained for real: its values after step 1 are those at the start of step 2, after a
    kill between the steps."""
    own, lines = {}, []

    def fit(job, model, method, callbacks=(), *, phase=None, epochs=None, data=None,
            first_pass=0):
        if phase == "step2" and "step1" in own and "resumed" not in own:
            raise Killed(phase)
        before = _own(model)
        history = FIT(job, model, method, callbacks, phase=phase, epochs=epochs, data=data)
        own[phase] = before, _own(model)
        return history

    monkeypatch.setattr(methods.StudentJob, "fit", fit)
    with pytest.raises(Killed):
        methods.METHODS.get("mad")(_mad_job(tmp_path, lines))
    assert (tmp_path / "run" / "backup" / "student_mad" / "finished" / "step1_own.npz").exists()
    own["resumed"] = True
    methods.METHODS.get("mad")(_mad_job(tmp_path, lines))
    (begin1, end1), (begin2, _) = own["step1"], own["step2"]
    assert len(end1) == 7  # theta of the logits and the 2 taps, 2 adapters' kernel and bias
    assert all(not np.array_equal(a, b) for a, b in zip(begin1, end1))  # step 1 learned them
    for a, b in zip(end1, begin2):
        np.testing.assert_array_equal(a, b)
    assert any("step 2 starts from step 1's fusion_logits, fusion_stage1_out" in line
               for line in lines)
