"""benchmarks/progressive_accuracy.py: method II against plain training on paired seeds through
the pipeline, its configs and last line, and a `--quick` run on the synthetic Fashion-MNIST of
tests/conftest.py."""

import pytest

from kerasbnn import pipeline
from tests.helpers import benchmark, quick_paired_run


def test_both_arms_train_the_same_student_on_the_same_teacher_data_and_seed(tmp_path):
    bench = benchmark("progressive_accuracy")
    args = bench.parse_args(["--root", str(tmp_path), "--variant", "III"])
    distilled = bench.arm_config(args, 2, "progressive", 3)
    plain = bench.arm_config(args, 2, "none", 6, "_plain")
    assert (distilled.distill.compare, plain.distill.compare) == (["progressive"], ["none"])
    assert distilled.distill.options == {"variant": "III", "block": None, "epochs_per_stage": 1}
    assert (distilled.student.epochs, plain.student.epochs) == (3, 6)
    assert distilled.run_dir != plain.run_dir and distilled.seed == plain.seed == 2
    assert distilled.data == plain.data and distilled.data.val_split == 0.1
    assert distilled.teachers == plain.teachers == bench.arm_config(args, 0, "none", 6).teachers
    assert (plain.teachers.seed, plain.student.init) == (0, "float")
    for values in (distilled, plain):
        pipeline.check_config(values)  # every changed key is read by the arm's method


def test_summary_pairs_progressive_with_plain():
    bench = benchmark("progressive_accuracy")
    seeds = [{"students": {"progressive": {"accuracy": p}, "plain": {"accuracy": q}}}
             for p, q in ((0.81, 0.80), (0.79, 0.80), (0.83, 0.80))]
    stats = bench.paired_seeds.paired(seeds, bench.PAIRS)["progressive_vs_plain"]
    assert stats["per_seed"] == pytest.approx([1.0, -1.0, 3.0])
    assert (stats["median"], stats["wins"]) == (pytest.approx(1.0), 2)


@pytest.mark.slow
def test_quick_run_goes_through_the_pipeline(tmp_path):
    record, lines, _ = quick_paired_run("progressive_accuracy", tmp_path)
    assert lines[-1].startswith("progressive II vs plain ") and "(wins " in lines[-1]
    assert len(list((tmp_path / "runs" / "teacher_cache").glob("*.keras"))) == 1  # trained once
    for seed in record["seeds"]:
        progressive, plain = seed["students"]["progressive"], seed["students"]["plain"]
        assert progressive["total_epochs"] == 4  # 3 stages x 1 (LIT) + 1 final
        assert progressive["variant"] == "II"
        assert plain["epochs"] == 4 and "val_accuracy" in plain  # as many epochs, on validation too
