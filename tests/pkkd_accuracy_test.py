"""benchmarks/pkkd_accuracy.py: PKKD against the adder network alone, lambda chosen on the
validation split, paired seeds through the pipeline; and a `--quick` run on the synthetic
Fashion-MNIST of tests/conftest.py."""

import pytest

from kerasbnn import pipeline
from tests.helpers import benchmark, quick_paired_run


def test_lambda_is_the_best_on_validation_ties_to_the_smaller():
    bench = benchmark("pkkd_accuracy")
    assert bench.best_lambda({0.01: 0.80, 0.1: 0.83, 1.0: 0.79}) == 0.1
    assert bench.best_lambda({1.0: 0.83, 0.01: 0.83, 0.1: 0.80}) == 0.01


@pytest.mark.parametrize("offset", ["max", "mean"])
def test_arms_differ_only_in_pkkd_lambda_and_offset(tmp_path, offset):
    bench = benchmark("pkkd_accuracy")
    args = bench.parse_args(["--root", str(tmp_path), "--epochs", "2", "--kernel-offset", offset])
    plain, pkkd = bench.arm_config(args, 4, None), bench.arm_config(args, 4, 0.1)
    assert plain.distill.options == {"pkkd": False, "width_multiplier": 0.5, "optimizer": "sgd"}
    assert pkkd.distill.options == {**plain.distill.options, "pkkd": True, "feature_weight": 0.1,
                                    "kernel_offset": offset}
    assert plain.run_dir.endswith("seed4_plain")
    assert pkkd.run_dir.endswith(f"seed4_{offset}_lambda0.1")
    assert (plain.seed, plain.data, plain.student) == (pkkd.seed, pkkd.data, pkkd.student)
    assert plain.data.val_split == 0.1 and plain.student.epochs == 2
    for values in (plain, pkkd):
        pipeline.check_config(values)  # every changed key is read by pkkd


def test_a_run_without_a_validation_split_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="val-split"):
        benchmark("pkkd_accuracy").main(["--root", str(tmp_path), "--val-split", "0"])
    assert not (tmp_path / "seed0_plain").exists()


@pytest.mark.slow
def test_quick_run_goes_through_the_pipeline(tmp_path):
    record, lines, _ = quick_paired_run("pkkd_accuracy", tmp_path)
    assert lines[-1].startswith(f"pkkd (lambda={record['lambda']:g}, chosen on validation; "
                                "kernel offset max) vs plain adder ") and "(wins " in lines[-1]
    chosen = {w: r["val_accuracy"] for w, r in record["selection"].items()}
    assert record["lambda"] == benchmark("pkkd_accuracy").best_lambda(chosen)
    for seed in record["seeds"]:
        assert seed["students"]["pkkd"]["pkkd"] and not seed["students"]["plain"]["pkkd"]
        assert seed["students"]["pkkd"]["feature_weight"] == record["lambda"]
        assert seed["students"]["pkkd"]["kernel_offset"] == "max"
