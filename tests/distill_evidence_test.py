"""benchmarks/distill_evidence.py: its summary and last line, and a `--quick` run on the
synthetic Fashion-MNIST of tests/conftest.py."""

import pytest

from kerasbnn import config
from tests.helpers import benchmark, quick_paired_run


def _module():
    return benchmark("distill_evidence")


def _seed(none, kd, mad):
    return {"students": {"none": {"accuracy": none}, "kd": {"accuracy": kd},
                         "mad": {"accuracy": mad}}}


def test_summary_gives_paired_differences_medians_and_wins():
    bench = _module()
    stats = bench.summary([_seed(0.80, 0.81, 0.83), _seed(0.80, 0.82, 0.81),
                           _seed(0.82, 0.80, 0.81)])
    assert stats["mad_vs_no_kd"]["per_seed"] == pytest.approx([3.0, 1.0, -1.0])
    assert stats["mad_vs_no_kd"]["wins"] == 2
    assert bench.final_line(stats) == "mad vs no_kd +1.0 pt (wins 2/3), vs best single +1.0 pt (wins 2/3)"


def test_summary_pairs_the_mad_variant_with_every_arm():
    seeds = [_seed(0.80, 0.81, 0.83), _seed(0.80, 0.82, 0.81)]
    for seed, variant in zip(seeds, (0.84, 0.79)):
        seed["students"]["mad_variant"] = {"accuracy": variant}
    stats = _module().summary(seeds)
    assert stats["mad_variant_vs_no_kd"]["per_seed"] == pytest.approx([4.0, -1.0])
    assert stats["mad_variant_vs_mad"]["per_seed"] == pytest.approx([1.0, -2.0])
    assert stats["mad_variant_vs_best_single"]["wins"] == 1


def test_best_single_teacher_is_chosen_on_validation_accuracy():
    bench = _module()
    teachers = {32: {"val_accuracy": 0.90, "accuracy": 0.80},
                8: {"val_accuracy": 0.91, "accuracy": 0.99}, 2: {"val_accuracy": 0.91}}
    assert bench.best_single_teacher(teachers) == 8


@pytest.mark.slow
def test_quick_run_goes_through_the_pipeline(tmp_path):
    record, lines, _ = quick_paired_run("distill_evidence", tmp_path, "--mad-variant",
                                        "distill.delta_objective=teacher_ce")
    assert lines[-1].startswith("mad vs no_kd ") and "(wins " in lines[-1]
    assert lines[-2].startswith("mad_variant (distill.delta_objective=teacher_ce) vs no_kd ")
    # teachers were trained once: both seeds loaded them from the cache
    assert len(list((tmp_path / "runs" / "teacher_cache").glob("*.keras"))) == 2
    for seed in record["seeds"]:
        assert set(seed["students"]) == {"none", "kd", "mad", "mad_variant"}
    variant = config.load(str(tmp_path / "runs" / "seed1_mad_variant" / "config.yaml"))
    assert (variant.seed, variant.distill.delta_objective, variant.distill.compare) == (
        1, "teacher_ce", ["mad"])


def test_set_gives_every_arm_the_loss_and_refuses_other_sections():
    bench = _module()
    args = bench.parse_args(["--set", "distill.feature_weight=0", "--set", "distill.ce_weight=0"])
    values = bench.base_config(args, 3)
    assert (values.distill.feature_weight, values.distill.ce_weight, values.seed) == (0.0, 0.0, 3)
    with pytest.raises(SystemExit):
        bench.parse_args(["--set", "student.epochs=9"])


def test_kd_loss_selection_pairs_each_variant_with_none_on_validation():
    selection = benchmark("kd_loss_selection")
    rows = [{"variant": "none", "seed": 0, "val": 0.70, "test": 0.60},
            {"variant": "none", "seed": 1, "val": 0.72, "test": 0.61},
            {"variant": "kd_logits", "seed": 0, "val": 0.71, "test": 0.50},
            {"variant": "kd_logits", "seed": 1, "val": 0.74, "test": 0.50}]
    paired = selection.paired(rows)["kd_logits"]
    assert paired["val_diff"] == pytest.approx([1.0, 2.0]) and paired["val_mean"] == pytest.approx(1.5)
    values = selection.student_config("/tmp/x", "kd_T4", 3, 4)
    assert (values.seed, values.distill.compare, values.distill.temperature_squared) == (3, ["kd"], True)
