"""The run's export: each model converted by Larq Compute Engine (verified against Keras),
its size, latency and bit accounting written to `results/convert_<name>.json`; a model
whose results are there is not converted again (`--resume`)."""

import os

from kerasbnn.export import lce_convert, measure_latency
from kerasbnn.utils.summary import summary


def convert_and_benchmark(config, run, sample, named_models, print_fn=print):
    """LCE conversion (verified), size, latency and bit accounting of each model."""
    for name, model in named_models.items():
        if run.read_json(run.convert_step(name)) is not None:
            continue
        path = run.tflite(name)
        print_fn(f"[convert] {name} -> {os.path.relpath(path, run.root)}")
        report = lce_convert(model, path, sample=sample,
                             verify=config.convert.verify, int8=config.convert.int8)
        print_fn(str(report))
        latency = measure_latency(report.path, num_threads=config.benchmark.threads,
                                  runs=config.benchmark.runs, use_xnnpack=not report.binary_layers)
        totals = summary(model, print_fn=lambda *_: None)
        kept = {k: totals[k] for k in ("params", "memory_mbit", "bops", "flops", "ops")}
        run.write_json(run.convert_step(name), {**report.to_dict(), "latency_ms": latency,
                                                "summary": kept})
