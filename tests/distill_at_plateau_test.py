"""benchmarks/distill_at_plateau.py: its configs (the recipe's student, cached teachers, the
plateau check), its choices on validation, its summary, and a `--quick` run on the synthetic
Fashion-MNIST of tests/conftest.py."""

import pytest

from kerasbnn import config
from kerasbnn.run.checks import check_config
from tests.helpers import benchmark, quick_paired_run


def _module():
    return benchmark("distill_at_plateau")


def test_every_arm_gets_the_recipe_and_the_cached_teachers(tmp_path):
    bench = _module()
    args = bench.parse_args(["--root", str(tmp_path), "--seeds", "2"])
    values = bench.seed_config(args, 1)
    assert (values.seed, values.model.block, values.student.learning_rate) == (1, "bireal", 5e-3)
    assert (values.student.init, values.data.augment, values.data.val_split) == ("float", False, 0.1)
    assert values.distill.compare == ["none", "kd", "mad", "average"]
    assert (values.distill.teacher_logits, values.distill.feature_weight) == ("cached", 0.0)
    assert (values.teachers.seed, values.teachers.patience, values.teachers.bits) == (0, 4, [32, 4, 2])
    assert values.teachers.cache_dir == str(tmp_path / "teacher_cache")
    check_config(values)


def test_the_plateau_check_trains_none_alone_for_longer_on_the_same_seed(tmp_path):
    bench = _module()
    args = bench.parse_args(["--root", str(tmp_path), "--epochs", "6"])
    values = bench.seed_config(args, 0, arms=("none",), overrides=["student.epochs=12"],
                               run_dir=str(tmp_path / "x2"))
    # none alone refuses loss settings it does not read: they are left out
    assert values.distill.compare == ["none"] and values.distill.feature_weight == 0.2
    assert (values.seed, values.student.epochs) == (0, 12)
    check_config(values)


def test_choices_on_validation():
    bench = _module()
    teachers = {32: {"val_accuracy": 0.87}, 4: {"val_accuracy": 0.87}, 2: {"val_accuracy": 0.80}}
    assert bench.best_single(teachers) == 32  # ties: more bits


def test_summary_and_mean_curves():
    bench = _module()

    def seed(none, kd, mad, average, variant, curve):
        arms = {"none": none, "kd": kd, "mad": mad, "average": average, "mad_teacher_ce": variant}
        return {"students": {a: {"accuracy": v, "curve": curve} for a, v in arms.items()}}

    rows = lambda *acc: [{"minutes": m, "images": 100 * m, "val_accuracy": a}  # noqa: E731
                         for m, a in enumerate(acc, 1)]
    seeds = [seed(0.80, 0.81, 0.83, 0.82, 0.79, rows(0.5, 0.7)),
             seed(0.80, 0.82, 0.81, 0.80, 0.81, rows(0.6, 0.8, 0.9))]
    stats = bench.summary(seeds)
    assert stats["mad_vs_no_kd"]["per_seed"] == pytest.approx([3.0, 1.0])
    assert stats["mad_teacher_ce_vs_best_single"]["per_seed"] == pytest.approx([-2.0, -1.0])
    assert stats["average_vs_no_kd"]["wins"] == 1
    curve = bench.mean_curves(seeds)["arms"]["mad"]["curve"]
    assert [r["val_accuracy"] for r in curve] == pytest.approx([0.55, 0.75])  # common epochs
    assert bench.final_line(stats) == (
        "mad vs no_kd +2.0 pt (wins 2/2), vs best single +0.5 pt (wins 1/2)")


def test_how_much_sooner_each_arm_reaches_what_none_ends_at():
    bench = _module()

    def rows(seconds, *acc):  # cumulative minutes, as time_to_accuracy.curve writes them
        return [{"minutes": sum(seconds[:i]) / 60, "images": 100 * i, "val_accuracy": a}
                for i, a in enumerate(acc, 1)]

    seeds = [{"students": {"none": {"curve": rows([10, 10, 30], 0.70, 0.80, 0.84)},
                           "mad": {"curve": rows([12, 12, 12], 0.80, 0.86, 0.88)}}},
             {"students": {"none": {"curve": rows([10, 10, 10], 0.72, 0.82, 0.86)},
                           "mad": {"curve": rows([12, 60, 12], 0.70, 0.80, 0.82)}}}]
    record = bench.sooner(seeds)
    assert record["targets"] == pytest.approx({"none_at_the_end": 0.85, "every_arm_reaches": 0.85})
    none, mad = record["arms"]["none"], record["arms"]["mad"]
    assert (none["median_epoch_seconds"], mad["median_epoch_seconds"]) == (10, 12)  # shared epochs out
    assert none["none_at_the_end"] == {"epochs": 3, "images": 300, "minutes": 0.5}
    assert mad["none_at_the_end"] == {"epochs": 3, "images": 300, "minutes": 0.6}
    seeds[0]["students"]["mad"]["curve"][1]["val_accuracy"] = 0.92  # mad's mean: 0.86 at epoch 2
    record = bench.sooner(seeds)
    assert record["arms"]["mad"]["none_at_the_end"]["epochs"] == 2
    assert bench.sooner_lines(record)[1] == ("mad reaches none's final mean validation accuracy "
                                             "(85.00%) at epoch 2 (0.4 min); 12.0 s an epoch")


@pytest.mark.slow
def test_quick_run_goes_through_the_pipeline(tmp_path):
    record, lines, saved = quick_paired_run("distill_at_plateau", tmp_path)
    assert lines[-1].startswith("mad vs no_kd ") and "(wins " in lines[-1]
    assert set(saved["delta_rate_tries"]) == {"0.01", "0.1", "1.0"}
    assert record["delta_rate"] in (0.01, 0.1, 1.0)
    assert record["plateau_check"]["epochs"] == 2 * record["args"]["epochs"]
    for seed in record["seeds"]:
        assert set(seed["students"]) == {"none", "kd", "mad", "average", "mad_teacher_ce"}
        assert len(seed["students"]["mad"]["delta"]) == 2  # the quick run's two teachers
    variant = config.load(str(tmp_path / "runs" / "seed1_mad_teacher_ce" / "config.yaml"))
    assert (variant.seed, variant.distill.delta_objective) == (1, "teacher_ce")
    assert (tmp_path / "distill_at_plateau.png").exists()
    assert set(record["sooner"]["arms"]) == {"none", "kd", "mad", "average", "mad_teacher_ce"}
    assert record["sooner"]["arms"]["none"]["none_at_the_end"] is not None
