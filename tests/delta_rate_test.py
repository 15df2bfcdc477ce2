"""benchmarks/delta_rate.py: delta's rate chosen on validation for any config: the rule, the
configs it trains, its refusal of a config without a validation split, the delta it takes
from a student's results, and a real run (slow) on the synthetic Fashion-MNIST of
tests/conftest.py."""

import json

import pytest

from tests.helpers import REPO_ROOT, benchmark

DEMO = str(REPO_ROOT / "examples" / "configs" / "demo.yaml")


def _module():
    return benchmark("delta_rate")


@pytest.mark.parametrize("vals, chosen", [
    ({0.01: 0.80, 0.1: 0.83, 1.0: 0.81}, 0.1),
    ({0.01: 0.82, 0.1: 0.82, 1.0: 0.79}, 0.01),  # ties: the smaller rate
    ({0.01: 0.70, 0.1: 0.71, 1.0: 0.72}, 1.0),
])
def test_the_rate_with_the_best_validation_accuracy_is_chosen(vals, chosen):
    bench, lines, seen = _module(), [], []

    def train(config, quiet):
        seen.append(config)
        return {"val_accuracy": vals[config], "accuracy": 0.5, "delta": [0.25, 0.75]}

    best, tries = bench.choose(lambda rate: rate, list(vals), train=train,
                               print_fn=lines.append)
    assert best == chosen and seen == list(vals) and set(tries) == set(vals)
    assert lines[0] == (f"delta rate 0.01: validation {100 * vals[0.01]:.2f}%, test 50.00%, "
                        "delta at the end 0.250/0.750")


def test_each_rate_trains_mad_alone_in_its_own_run_directory(tmp_path):
    bench = _module()
    args = bench.parse_args(["--config", DEMO, "--root", str(tmp_path), "--rates", "0.01,1",
                             "--set", "student.epochs=3"])
    assert args.rates == [0.01, 1.0]
    configs = [bench.config_for_rate(args, rate) for rate in args.rates]
    assert [c.run_dir for c in configs] == [str(tmp_path / "rate0.01"), str(tmp_path / "rate1")]
    assert [c.distill.delta_learning_rate for c in configs] == [0.01, 1.0]
    for c in configs:  # the demo's config otherwise, with its preset, and one teacher cache
        assert c.distill.compare == ["mad"] and c.student.epochs == 3
        assert (c.model.block, c.student.learning_rate) == ("reactnet", 5e-3)
        assert c.teachers.bits == [32, 2]
        assert c.teachers.cache_dir == str(tmp_path / "teacher_cache")


def test_a_config_without_a_validation_split_is_refused_before_training(tmp_path):
    path = tmp_path / "no_val.yaml"
    path.write_text("data:\n  train_limit: 256\nteachers:\n  bits: [32, 2]\n")
    with pytest.raises(SystemExit, match="data.val_split"):
        _module().main(["--config", str(path), "--root", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_final_delta_is_the_logits_delta_of_the_results():
    bench = _module()
    assert bench.final_delta({"deltas": {"logits": [0.2, 0.3, 0.5], "stage1": [1, 0, 0]}}) == [
        0.2, 0.3, 0.5]
    assert bench.final_delta({"accuracy": 0.8}) is None  # none and kd log no delta
    assert bench.final_delta({"deltas": {}}) is None


@pytest.mark.slow
def test_a_real_choice_resumes_and_writes_its_record(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "data: {train_limit: 512, val_limit: 128, val_split: 0.25, batch_size: 64}\n"
        "model: {width_multiplier: 0.25}\n"
        "teachers: {bits: [32, 2], float_epochs: 1, epochs: 1}\n"
        "student: {epochs: 1, init: float}\n"
        "distill: {feature_weight: 0.0}\n")
    argv = ["--config", str(path), "--root", str(tmp_path / "runs"), "--rates", "0.01,1",
            "--out", str(tmp_path / "choice.json")]
    lines = []
    best, tries = _module().main(argv, print_fn=lines.append)
    assert best in (0.01, 1.0) and lines[-1] == f"delta's SGD rate chosen on validation: {best:g}"
    assert all(len(t["delta"]) == 2 for t in tries.values())
    # SGD at rate 1 moves delta further from uniform than at 0.01
    move = {r: abs(t["delta"][0] - 0.5) for r, t in tries.items()}
    assert move[1.0] > move[0.01]
    saved = json.loads((tmp_path / "choice.json").read_text())
    assert saved["rate"] == best and set(saved["tries"]) == {"0.01", "1.0"}
    again, _ = _module().main(argv, print_fn=lambda *_: None)  # finished: read back
    assert again == best
