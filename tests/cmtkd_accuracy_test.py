"""benchmarks/cmtkd_accuracy.py: CMT-KD against the student alone and the paper's average
teacher (§4.2) through the pipeline, its summary and last line, and a `--quick` run on the
synthetic Fashion-MNIST of tests/conftest.py."""

import pytest

from kerasbnn import pipeline
from tests.helpers import benchmark, quick_paired_run


def _seed(none, average, cmtkd):
    return {"students": {"none": {"accuracy": none}, "average": {"accuracy": average},
                        "cmtkd": {"accuracy": cmtkd}}}


def test_summary_gives_paired_differences_medians_and_wins():
    bench = benchmark("cmtkd_accuracy")
    stats = bench.summary([_seed(0.80, 0.81, 0.83), _seed(0.80, 0.82, 0.81),
                           _seed(0.82, 0.80, 0.81)])
    assert stats["cmtkd_vs_alone"]["per_seed"] == pytest.approx([3.0, 1.0, -1.0])
    assert stats["cmtkd_vs_average"]["per_seed"] == pytest.approx([2.0, -1.0, 1.0])
    assert stats["average_vs_alone"]["wins"] == 2
    assert bench.final_line(stats) == ("cmtkd vs alone +1.0 pt (wins 2/3), "
                                       "vs average +1.0 pt (wins 2/3)")


def test_every_seed_compares_the_papers_arms_on_the_same_teachers(tmp_path):
    bench = benchmark("cmtkd_accuracy")
    args = bench.parse_args(["--root", str(tmp_path), "--set", "distill.temperature=4"])
    values = bench.base_config(args, 3)
    assert values.distill.compare == ["none", "average", "cmtkd"]
    assert (values.teachers.bits, values.teachers.quantizer, values.teachers.seed) == (
        [4, 6, 8], "hwgq", 0)
    assert (values.seed, values.student.init, values.distill.temperature) == (3, "random", 4.0)
    assert bench.base_config(args, 0).teachers == values.teachers  # trained once, cached
    pipeline.check_config(values)  # every changed key is read by one of the arms
    assert args.out.endswith("cmtkd_paired.json")  # cmtkd_accuracy.json: the old arms'


@pytest.mark.slow
def test_quick_run_goes_through_the_pipeline(tmp_path):
    record, lines, _ = quick_paired_run("cmtkd_accuracy", tmp_path)
    assert lines[-1].startswith("cmtkd vs alone ") and "vs average " in lines[-1]
    # the average arm's teachers (and the float one they are made from) were trained once
    assert len(list((tmp_path / "runs" / "teacher_cache").glob("*.keras"))) == 4
    for seed in record["seeds"]:
        assert set(seed["students"]) == {"none", "average", "cmtkd"}
        assert seed["students"]["average"]["deltas"]["logits"] == pytest.approx([1 / 3] * 3)
