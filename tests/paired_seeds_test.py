"""benchmarks/paired_seeds.py: what the paired-seed benchmarks share, here `--deterministic`
(that the pipeline then turns on op determinism is tests/recipe_test.py's)."""

import pytest

from kerasbnn import pipeline
from tests.helpers import benchmark


@pytest.mark.parametrize("name, build", [
    ("distill_evidence", lambda bench, args: [bench.base_config(args, 3)]),
    ("cmtkd_accuracy", lambda bench, args: [bench.base_config(args, 3)]),
    ("progressive_accuracy", lambda bench, args: [bench.arm_config(args, 3, "progressive", 3),
                                                  bench.arm_config(args, 3, "none", 6, "_p")]),
    ("pkkd_accuracy", lambda bench, args: [bench.arm_config(args, 3, None),
                                           bench.arm_config(args, 3, 10.0)]),
])
def test_deterministic_sets_deterministic_in_every_arm_and_only_when_asked(name, build):
    bench = benchmark(name)
    for argv, expected in (([], False), (["--deterministic"], True)):
        for values in build(bench, bench.parse_args(argv)):
            assert (values.seed, values.deterministic) == (3, expected)
            pipeline.check_config(values)  # `deterministic` is read by every method
