"""RPReLU's two TFLite lowerings side by side: the `where` form against the ReLU form.

    python benchmarks/rprelu_latency.py [--float-widths 0.5] [--binary-widths 0.5,1,2] \
        [--runs 20] [--rounds 5] [--stat median] [--json FILE]

`kerasbnn.layers.RPReLU` computes ReActNet's eq. 5 as relu(s) - beta relu(-s) + zeta with
s = x - gamma, which TFLite lowers to NEG, RELU, MUL and SUB; it was first written with a
`where` on s > 0, lowered to GREATER, MUL and SELECT. Both give the same numbers bit for bit
(tests/layers/activations_test.py). This benchmark converts each network twice, once as the
library writes RPReLU and once with the `where` form swapped into `RPReLU.call` while it
converts, and times the two files of every network interleaved.

The networks are `benchmarks/recipe_latency.py`'s with `model.block=reactnet` (the demo's
ResNet-20, whose 18 one-conv blocks each end in an RPReLU): the float teacher at each
`--float-widths` and the binary student at each `--binary-widths`, untrained. Each file is
converted with `kerasbnn.export.lce_convert` and its default verification. Latency: LCE's
Python interpreter, 1 thread, batch 1, the settings of recipe_latency (binary models with the
indirect BGEMM kernel, XNNPACK for float ops); `kerasbnn.export.compare_latency` interleaves
all files inference by inference, each of `--rounds` rounds gives one median (or min,
`--stat`) of `--runs` inferences per file, and the median over rounds is kept.

The last line reads `RPReLU: the where form takes <where ms / relu ms>x the relu form's
latency (binary w0.5 reactnet, LCE x86 portable kernels)`, for the first binary width: above 1
the relu form is faster.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # recipe_latency, when imported

import recipe_latency  # noqa: E402

FORMS = ("where", "relu")
BLOCK = "reactnet"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=recipe_latency.DEMO_CONFIG,
                        help="run config whose networks are built (default: the demo's)")
    parser.add_argument("--float-widths", type=recipe_latency._widths, default=[0.5],
                        help="width multipliers of the float teacher (default 0.5)")
    parser.add_argument("--binary-widths", type=recipe_latency._widths, default=[0.5, 1.0, 2.0],
                        help="width multipliers of the binary student; the first is the "
                             "last line's (default 0.5,1,2)")
    parser.add_argument("--runs", type=recipe_latency._positive, default=20,
                        help="timed inferences per file per round")
    parser.add_argument("--rounds", type=recipe_latency._positive, default=5,
                        help="rounds; the median over rounds is kept")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="per-round statistic of the interleaved runs")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def _where_call(layer, inputs):
    """RPReLU's first `call`: where(s > 0, s, beta s) + zeta, s = x - gamma."""
    from keras import ops

    shifted = ops.subtract(inputs, layer.gamma)
    return ops.where(shifted > 0, shifted, layer.beta * shifted) + layer.zeta


@contextlib.contextmanager
def rprelu_form(form):
    """Within the block, every RPReLU computes with `form` (`"where"` or `"relu"`, the
    library's own)."""
    from kerasbnn.layers import RPReLU

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, received {form!r}.")
    original = RPReLU.call
    if form == "where":
        RPReLU.call = _where_call
    try:
        yield
    finally:
        RPReLU.call = original


def convert(args, out, network, form, print_fn):
    """`(path, facts)` of one network converted with RPReLU in `form`."""
    from kerasbnn import export

    kind, width = network
    path = os.path.join(out, f"{kind}_w{float(width)}_{form}.tflite")
    model = recipe_latency.build(args.config, kind, width, BLOCK)
    with rprelu_form(form):
        report = export.lce_convert(model, path)
    print_fn(f"[convert] {kind} w{float(width)} {form}: {report.op_counts}")
    return path, {"op_counts": report.op_counts, "max_abs_diff": report.max_abs_diff,
                  "size_bytes": os.path.getsize(path)}


def measure(args, out, print_fn):
    """`{network key: {form: row}}`: every network converted in both forms, timed interleaved."""
    from kerasbnn.export import compare_latency

    networks = [("float", w) for w in args.float_widths] + [
        ("binary", w) for w in args.binary_widths]
    files, facts = {}, {}
    for network in networks:
        for form in FORMS:
            key = (recipe_latency.model_key(*network, BLOCK), form)
            files[key], facts[key] = convert(args, out, network, form, print_fn)
    specs = {f"{name} {form}": (path, recipe_latency.SETTINGS[name.split()[0]])
             for (name, form), path in files.items()}
    print_fn(f"[latency] {len(specs)} files interleaved, {args.rounds} rounds of {args.runs} "
             f"runs, 1 thread, batch 1; {recipe_latency.KERNELS} on {recipe_latency._machine()}")
    rounds = {name: [] for name in specs}
    for _ in range(args.rounds):
        for name, ms in compare_latency(specs, num_threads=1, runs=args.runs,
                                        statistic=args.stat).items():
            rounds[name].append(ms)
    rows = {}
    for (name, form), fact in facts.items():
        times = rounds[f"{name} {form}"]
        rows.setdefault(name, {})[form] = {"latency_ms": statistics.median(times),
                                           "rounds_ms": times, **fact}
    return rows


def main(argv=None, print_fn=print):
    """Runs the benchmark; returns the JSON-ready record (also written to `--json`)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kerasbnn_rprelu_latency_") as out:
        rows = measure(args, out, print_fn)
    print_fn(f"\n{'model':<24}{'where ms':>10}{'relu ms':>10}{'where/relu':>12}")
    for name, forms in rows.items():
        forms["speedup"] = forms["where"]["latency_ms"] / forms["relu"]["latency_ms"]
        print_fn(f"{name:<24}{forms['where']['latency_ms']:>10.3f}"
                 f"{forms['relu']['latency_ms']:>10.3f}{forms['speedup']:>11.2f}x")
    headline = recipe_latency.model_key("binary", args.binary_widths[0], BLOCK)
    line = (f"RPReLU: the where form takes {rows[headline]['speedup']:.2f}x the relu form's "
            f"latency ({headline}, {recipe_latency.KERNELS})")
    record = {"setting": {"config": os.path.relpath(args.config, recipe_latency.REPO_ROOT),
                          "kernels": recipe_latency.KERNELS,
                          "machine": recipe_latency._machine(), "threads": 1, "batch": 1,
                          "runs": args.runs, "rounds": args.rounds, "stat": args.stat},
              "models": rows, "line": line}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    print_fn(line)
    return record


if __name__ == "__main__":
    main()
