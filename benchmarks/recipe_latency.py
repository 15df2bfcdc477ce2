"""The recipe's binary student against its float teacher through LCE: latency and size by width.

    python benchmarks/recipe_latency.py [--float-widths 0.5,1] [--binary-widths 0.5,1,2,3,4] \
        [--blocks reactnet,bireal] [--runs 20] [--rounds 5] [--out DIR] [--json FILE]

The networks are the ones a run of `--config` (default the demo's, examples/configs/demo.yaml:
Fashion-MNIST 28x28x1, 10 classes, `resnet20`) builds, through `kerasbnn.run.teachers.build`
with `model.block` and `model.width_multiplier` set here: the float teacher at 32 bits and
the binary student at 1 bit with the config's `student.binary` scheme (`bireal`). Weights
are untrained (latency and size do not depend on them). Each is converted with
`kerasbnn.export.lce_convert` and its default verification, as the pipeline's convert step
does; with `--out DIR`, a model whose `.tflite` and report are already in DIR is not
converted again, so a stopped run costs only what is left.

Latency: LCE's Python interpreter on this machine, 1 thread, batch 1; binary models with LCE's
indirect BGEMM kernel, every model with XNNPACK for its float ops. On x86 these are LCE's
portable binary kernels (ARM has optimized ones, not measurable here), so the numbers say
nothing about a phone. `kerasbnn.export.compare_latency` interleaves all models inference
by inference, so load from other processes falls on all of them alike; each of `--rounds`
rounds gives one median (or min, `--stat`) of `--runs` inferences per model, and the median
over rounds is kept. Ratios are binary / float: below 1 the binary network is faster or smaller.

The last lines, one per block (the first of `--blocks` last), name the widest binary student
that is not slower than the float teacher of the first `--float-widths`, e.g.
`binary w2.0 reactnet: 0.90x the float w0.5's latency, 0.74x its size (LCE x86 portable kernels)`,
or say that no width is.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO_ROOT, "examples", "configs", "demo.yaml")
KERNELS = "LCE x86 portable kernels"
SETTINGS = {
    "float": dict(use_indirect_bgemm=False, use_xnnpack=True),
    "binary": dict(use_indirect_bgemm=True, use_xnnpack=True),
}


def _widths(text):
    """`"0.5,1"` -> `[0.5, 1.0]`; argparse reports the ValueError as a usage error."""
    try:
        widths = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers; write e.g. 0.5,1,2."
        ) from None
    if not widths or min(widths) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give at least one width, every width above 0 (e.g. 0.5,1,2)."
        )
    return list(dict.fromkeys(widths))


def _blocks(text):
    blocks = [item.strip() for item in text.split(",") if item.strip()]
    if not blocks:
        raise argparse.ArgumentTypeError(
            "name at least one block, e.g. reactnet or reactnet,bireal."
        )
    return list(dict.fromkeys(blocks))


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1.")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEMO_CONFIG,
                        help="run config whose networks are built (default: the demo's)")
    parser.add_argument("--float-widths", type=_widths, default=[0.5, 1.0],
                        help="width multipliers of the float teacher; the first is the one "
                             "the last line compares against (default 0.5,1)")
    parser.add_argument("--binary-widths", type=_widths, default=[0.5, 1.0, 2.0, 3.0, 4.0],
                        help="width multipliers of the binary student (default 0.5,1,2,3,4)")
    parser.add_argument("--blocks", type=_blocks, default=["reactnet", "bireal"],
                        help="model.block values; the first is the headline (default "
                             "reactnet,bireal)")
    parser.add_argument("--runs", type=_positive, default=20,
                        help="timed inferences per model per round")
    parser.add_argument("--rounds", type=_positive, default=5,
                        help="rounds; the median over rounds is kept")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="per-round statistic of the interleaved runs")
    parser.add_argument("--out", default=None,
                        help="folder for the .tflite files and their reports, reused when "
                             "run again (default: a new temporary folder)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def model_key(kind, width, block):
    """`"binary w2.0 reactnet"`: the name of one network in the table and the JSON."""
    return f"{kind} w{float(width)} {block}"


def plan(args):
    """`{key: (kind, width, block)}` of every network to time, floats first."""
    networks = {}
    for block in args.blocks:
        for kind, widths in (("float", args.float_widths), ("binary", args.binary_widths)):
            for width in widths:
                networks[model_key(kind, width, block)] = (kind, width, block)
    return networks


def build(config_path, kind, width, block):
    """The run's float teacher (`kind="float"`) or binary student of `config_path` at
    `model.width_multiplier=width` and `model.block=block`, untrained."""
    import keras

    from kerasbnn import config as config_lib
    from kerasbnn import data as datasets
    from kerasbnn.run.teachers import build as build_network

    config = config_lib.load(config_path, [f"model.width_multiplier={width}",
                                           f"model.block={block}"])
    info = datasets.info(config.data.name)
    keras.utils.set_random_seed(config.seed)
    if kind == "float":
        return build_network(config, info, 32, quantizer=config.teachers.quantizer)
    return build_network(config, info, 1, binary=config.student.binary)


def convert(args, out, key, spec, print_fn):
    """The `.tflite` path and conversion facts of one network: read back from `out` when a
    previous run left them there, else built, converted (verified) and written."""
    from kerasbnn import export

    stem = os.path.join(out, key.replace(" ", "_"))
    path, facts_path = f"{stem}.tflite", f"{stem}.json"
    if os.path.exists(path) and os.path.exists(facts_path):
        print_fn(f"[convert] {key}: reusing {path}")
        with open(facts_path) as f:
            return path, json.load(f)
    model = build(args.config, *spec)
    print_fn(f"[convert] {key}: {model.count_params():,} parameters")
    report = export.lce_convert(model, path)
    print_fn(str(report))
    facts = {"params": model.count_params(), "bconv_ops": report.bconv_ops,
             "binary_layers": len(report.binary_layers), "op_counts": report.op_counts,
             "max_abs_diff": report.max_abs_diff, "top1_agreement": report.top1_agreement}
    with open(facts_path, "w") as f:
        json.dump(facts, f, indent=1)
    return path, facts


def time_rounds(args, files, networks):
    """`{key: [per-round latency in ms]}`: every round times all `files` interleaved."""
    from kerasbnn.export import compare_latency

    specs = {key: (path, SETTINGS[networks[key][0]]) for key, path in files.items()}
    rounds = {key: [] for key in files}
    for _ in range(args.rounds):
        measured = compare_latency(specs, num_threads=1, runs=args.runs, statistic=args.stat)
        for key, ms in measured.items():
            rounds[key].append(ms)
    return rounds


def ratios(rows, networks):
    """`{binary key: {float key: {"latency": x, "size": x}}}` against every float network of
    the same block (binary / float)."""
    result = {}
    for key, (kind, _, block) in networks.items():
        if kind != "binary":
            continue
        result[key] = {
            other: {"latency": rows[key]["latency_ms"] / rows[other]["latency_ms"],
                    "size": rows[key]["size_bytes"] / rows[other]["size_bytes"]}
            for other, (other_kind, _, other_block) in networks.items()
            if other_kind == "float" and other_block == block
        }
    return result


def verdict(block, args, ratio):
    """The line naming the widest binary student of `block` not slower than the float
    teacher of the first float width, or saying that none is."""
    reference = model_key("float", args.float_widths[0], block)
    name = f"float w{float(args.float_widths[0])}"
    candidates = [width for width in args.binary_widths
                  if ratio[model_key("binary", width, block)][reference]["latency"] <= 1.0]
    if candidates:
        width = max(candidates)
        found = ratio[model_key("binary", width, block)][reference]
        return (f"binary w{float(width)} {block}: {found['latency']:.2f}x the {name}'s latency, "
                f"{found['size']:.2f}x its size ({KERNELS})")
    width = min(args.binary_widths)
    nearest = ratio[model_key("binary", width, block)][reference]
    return (f"binary {block}: no width is as fast as the {name} (the narrowest, "
            f"w{float(width)}, takes {nearest['latency']:.2f}x its latency at "
            f"{nearest['size']:.2f}x its size; {KERNELS})")


def print_table(args, rows, ratio, print_fn):
    """One line per network: latency, size, LceBconv2d ops, ratios to each float width."""
    floats = [float(width) for width in args.float_widths]
    head = "".join(f"{'lat/f' + str(w):>10}{'size/f' + str(w):>11}" for w in floats)
    print_fn(f"\n{'model':<24}{'params':>10}{'latency ms':>11}{'size kB':>9}{'bconv':>6}{head}"
             f"   {args.stat} of each round (ms)")
    for key, row in rows.items():
        block = key.split()[-1]
        cells = ""
        for width in floats:
            found = ratio.get(key, {}).get(model_key("float", width, block))
            cells += (f"{found['latency']:>10.2f}{found['size']:>11.2f}" if found
                      else f"{'':>10}{'':>11}")
        rounds = " ".join(f"{ms:.2f}" for ms in row["rounds_ms"])
        print_fn(f"{key:<24}{row['params']:>10,}{row['latency_ms']:>11.3f}"
                 f"{row['size_bytes'] / 1e3:>9.1f}{row['bconv_ops']:>6}{cells}   {rounds}")


def _machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.machine()}"


def measure(args, out, print_fn):
    """`(networks, rows)`: every network converted (or reused) and timed interleaved."""
    networks = plan(args)
    files, facts = {}, {}
    for key, spec in networks.items():
        files[key], facts[key] = convert(args, out, key, spec, print_fn)
    print_fn(f"[latency] {len(files)} models interleaved, {args.rounds} rounds of {args.runs} "
             f"runs, 1 thread, batch 1; {KERNELS} on {_machine()}")
    rounds = time_rounds(args, files, networks)
    rows = {key: {"kind": networks[key][0], "width": networks[key][1],
                  "block": networks[key][2], "latency_ms": statistics.median(rounds[key]),
                  "rounds_ms": rounds[key], "size_bytes": os.path.getsize(files[key]),
                  "tflite": files[key], **facts[key]}
            for key in networks}
    return networks, rows


def main(argv=None, print_fn=print):
    """Runs the benchmark; returns the JSON-ready record (also written to `--json`)."""
    args = parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="kerasbnn_recipe_latency_")
    os.makedirs(out, exist_ok=True)
    networks, rows = measure(args, out, print_fn)
    ratio = ratios(rows, networks)
    print_table(args, rows, ratio, print_fn)
    verdicts = {block: verdict(block, args, ratio) for block in args.blocks}
    record = {"setting": {"config": os.path.relpath(args.config, REPO_ROOT),
                          "kernels": KERNELS, "machine": _machine(), "threads": 1, "batch": 1,
                          "runs": args.runs, "rounds": args.rounds, "stat": args.stat,
                          "settings": SETTINGS},
              "models": rows, "ratios": ratio, "verdicts": verdicts,
              "line": verdicts[args.blocks[0]]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    for block in reversed(args.blocks):
        print_fn(verdicts[block])
    return record


if __name__ == "__main__":
    main()
