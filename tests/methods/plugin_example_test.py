"""A method plug-in written outside kerasbnn: the whole of it is the first half of this file.

`toy_kd` is Hinton's KD from the float teacher with its own options, the config section
`distill.toy_kd: {temperature: ..., alpha: ...}` (`ToyKDOptions`), and a line of its own in the
report (`toy_report`). Registering it (the `toy_kd` fixture: `methods.method(...)` as a
decorator) is all it takes for the pipeline, the config checks, `--resume` and the report to
know it: nothing in kerasbnn names it. It is compared beside `mad` (the first-class
`distill.*` fields) and `at` (its own section `distill.at`) in one `distill.compare` run, each
method reading its own options.
"""

import dataclasses
import json
import pathlib
import re

import pytest

from kerasbnn import config, methods, pipeline, run_dir
from kerasbnn.resume import TEACHERS


@dataclasses.dataclass
class ToyKDOptions:
    """`distill.toy_kd`: the softmax temperature of KD and `alpha`, the weight of its KL term
    (the cross-entropy with the labels keeps weight 1)."""

    temperature: float = dataclasses.field(default=4.0, metadata={"above": 0.0})
    alpha: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})


def train_toy_kd(job):
    """The run's binary student, distilled from the float teacher at `distill.toy_kd`'s
    temperature and weight."""
    from kerasbnn.distill import LogitsDistillation, TermsDistiller

    options = methods.method_options(job.config, "toy_kd")

    def distiller(student, step):
        trainer = TermsDistiller(student, job.teachers[32], {
            "kl_loss": (LogitsDistillation(options.temperature), options.alpha)})
        trainer.compile(optimizer=job.optimizer(), metrics=["accuracy"])
        return trainer, ()

    student, _ = job.train_student("toy_kd", distiller)
    return student, {"teachers": [32], **dataclasses.asdict(options)}


def toy_report(config, run):
    """What toy_kd adds to the report: a line with the options it trained with."""
    result = run.read_json(run.student_step("toy_kd"))
    return [f"toy_kd: KD at temperature {result['temperature']:g}, alpha "
            f"{result['alpha']:g}.", ""], []


@pytest.fixture
def toy_kd():
    """Registers the plug-in for one test (registering it at import would show it to every
    test of the session)."""
    methods.method("toy_kd", teachers=(32,), options=ToyKDOptions, two_step=True,
                   depends_on=(*TEACHERS, "student."), report=toy_report)(train_toy_kd)
    yield "toy_kd"
    methods.METHODS.remove("toy_kd")


TINY = ["data.train_limit=64", "data.val_limit=32", "data.batch_size=32",
        "model.width_multiplier=0.25", "model.block=basic", "teachers.bits=[32, 2]",
        "teachers.epochs=1", "teachers.float_epochs=1", "student.epochs=1",
        "student.precise_bn=0"]


def _config(tmp_path, *overrides):
    return config.load("examples/configs/demo.yaml",
                       [f"run_dir={tmp_path / 'run'}", *TINY, *overrides])


def _write_conversions(run, names):
    """Stand-ins of the LCE results the report reads (conversion is not this test's)."""
    converted = {"file_size": 2000, "latency_ms": 1.0, "bconv_ops": 18, "max_abs_diff": 1e-5,
                 "top1_agreement": 1.0, "flipped_bits": {}, "first_flip": None,
                 "summary": {"memory_mbit": 0.1, "ops": 1e6}}
    for name in ("float_teacher", *names):
        run.write_json(run.convert_step(name), converted)


def test_a_plugin_method_is_compared_beside_mad_each_reading_its_own_options(tmp_path, toy_kd,
                                                                          shared_teachers):
    # A built-in method's section is read beside the plug-in's (at's training is its own
    # test's, tests/methods/attention_test.py: it is not trained here, to keep the suite short).
    with_at = _config(tmp_path, "distill.compare=[none, toy_kd, at, mad]",
                      "distill.toy_kd={temperature: 3, alpha: 0.7}", "distill.at={p: 3}")
    assert methods.method_options(with_at, "at").p == 3.0
    assert methods.method_options(with_at, "toy_kd") == ToyKDOptions(temperature=3.0, alpha=0.7)
    values = _config(tmp_path, "distill.compare=[none, toy_kd, mad]",
                     "distill.toy_kd={temperature: 3, alpha: 0.7}",
                     "distill.delta_learning_rate=0.05", shared_teachers)
    results = pipeline.run_compare(values)["students"]
    assert list(results) == ["none", "toy_kd", "mad"]
    assert results["toy_kd"]["temperature"] == 3.0 and results["toy_kd"]["alpha"] == 0.7
    assert results["mad"]["teachers"] == [32, 2] and results["mad"]["deltas"]
    for result in results.values():
        assert 0.0 <= result["accuracy"] <= 1.0
    saved = config.load(str(tmp_path / "run" / "config.yaml"))  # what --resume compares with
    assert saved.distill.sections == {"toy_kd": {"temperature": 3, "alpha": 0.7}}
    # the report shows what each method's hook adds, mad's and the plug-in's alike
    run = run_dir.RunDir(str(tmp_path / "run"))
    _write_conversions(run, results)
    path, _ = pipeline.write_report(values, run)
    report = pathlib.Path(path).read_text()
    assert "toy_kd: KD at temperature 3, alpha 0.7." in report
    assert "MAD's delta for the 32/2-bit teachers" in report
    assert "| toy_kd |" in report and "![delta mad](plots/delta_mad.png)" in report
    assert json.loads((tmp_path / "run" / "results" / "student_toy_kd.json").read_text())[
        "method"] == "toy_kd"


@pytest.mark.parametrize("overrides, message", [
    (["distill.toy_kd={temprature: 2}"],
     "Unknown config key 'distill.toy_kd.temprature'. Did you mean 'temperature'?"),
    (["distill.toy_kd={alpha: 1.5}"], "distill.toy_kd.alpha must be at most 1.0, got 1.5"),
    (["distill.toy_kd={temperature: warm}"], "distill.toy_kd.temperature must be a number"),
    (["distill.compare=[none, mad]", "distill.toy_kd={alpha: 0.2}"],
     "distill.toy_kd={'alpha': 0.2} does not apply to none, mad: only toy_kd reads it"),
])
def test_a_misspelled_or_invalid_option_of_the_plugin_is_refused_before_anything_is_written(
        tmp_path, toy_kd, overrides, message):
    values = _config(tmp_path, "distill.compare=[none, toy_kd, mad]", *overrides)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        pipeline.run_compare(values)
    assert not (tmp_path / "run").exists()


def test_the_registry_reads_the_plugins_section_from_its_declaration(toy_kd):
    assert methods.option_keys("toy_kd") == {"temperature", "alpha"}
    assert {"distill.toy_kd", "distill.options"} <= set(methods.config_keys("toy_kd"))
    assert methods.needs_teachers("toy_kd") == (32,)
    # the older spelling reaches it too when it is the run's one method with options
    values = config.load(None, ["distill.method=toy_kd", "distill.options={alpha: 0.25}"])
    assert methods.method_options(values, "toy_kd") == ToyKDOptions(alpha=0.25)
    methods.check_sections(values, ["none", "toy_kd"])
