"""LCE binary model vs float TFLite model, timed on this machine with LCE's interpreter.

By default builds the Bi-Real-style binary ResNet-18 and its float twin of
benchmarks/lce_latency.py (imported, not copied), converts both with `kerasbnn.lce_convert`
and times them with `kerasbnn.export.measure_latency`: batch 1, `--threads` threads, the
binary model with LCE's indirect BGEMM kernel (the fast one on x86), both with XNNPACK for
their float ops. `--tflite A.tflite B.tflite` times existing files instead (a file with
`LceBconv2d` ops counts as binary). Each model is timed in `--rounds` interleaved rounds of
`--runs` inferences; the lowest round median is kept, because other processes only add time.

x86 has only LCE's portable binary kernels, so the ratio here (about 2x for ResNet-18,
LCE.md section 5) says little about ARM; use tflite/device_benchmark.py on the device.

    .venv/bin/python tflite/local_benchmark.py --runs 20 --rounds 3
    .venv/bin/python tflite/local_benchmark.py --tflite runs/mad_cifar/student.tflite float.tflite
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LCE_LATENCY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks",
                           "lce_latency.py")


def load_lce_latency():
    """benchmarks/lce_latency.py as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("kerasbnn_benchmarks_lce_latency",
                                                  os.path.abspath(LCE_LATENCY))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_and_convert(out):
    """Binary and float ResNet-18 from benchmarks/lce_latency.py, converted into `out`."""
    bench = load_lce_latency()
    files = {}
    for name, binary in (("binary", True), ("float", False)):
        path = os.path.join(out, f"{name}_resnet18.tflite")
        report = bench.convert_with_kerasbnn(bench.build_kerasbnn(binary=binary), path)
        print(f"[{name}] {report.file_size / 1e6:.2f} MB, {report.bconv_ops} LceBconv2d")
        files[name] = path
    return files


def is_binary(path):
    """True when the flatbuffer holds LCE binary convolutions."""
    from kerasbnn.export import list_ops

    return "LceBconv2d" in list_ops(path)


def compare(files, *, threads, runs, rounds, print_fn=print):
    """Times every file; returns `{name: {"latency_ms", "rounds_ms", "size_bytes", "binary"}}`."""
    from kerasbnn.export import measure_latency

    binary = {name: is_binary(path) for name, path in files.items()}
    medians = {name: [] for name in files}
    for _ in range(rounds):
        for name, path in files.items():
            medians[name].append(measure_latency(
                path, num_threads=threads, runs=runs, use_indirect_bgemm=binary[name],
                use_xnnpack=True))
    results = {
        name: {"latency_ms": min(medians[name]), "rounds_ms": medians[name],
               "size_bytes": os.path.getsize(path), "binary": binary[name]}
        for name, path in files.items()
    }
    print_fn(f"\n{'model':<28}{'kind':>8}{'latency ms':>12}{'size MB':>10}")
    for name, r in results.items():
        kind = "LCE" if r["binary"] else "float"
        print_fn(f"{name:<28}{kind:>8}{r['latency_ms']:>12.2f}{r['size_bytes'] / 1e6:>10.2f}")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tflite", nargs="+", help="time these files instead of building ResNet-18")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20, help="timed inferences per round (median)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    p.add_argument("--out", help="folder for the converted files (default: a temporary folder)")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    for name in ("threads", "runs", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, received {getattr(args, name)}")
    if args.tflite:
        missing = [f for f in args.tflite if not os.path.isfile(f)]
        if missing:
            p.error(f"no such file: {', '.join(missing)}")
        files = {os.path.basename(f): f for f in args.tflite}
    else:
        out = args.out or tempfile.mkdtemp(prefix="kerasbnn_local_benchmark_")
        os.makedirs(out, exist_ok=True)
        files = build_and_convert(out)
    results = compare(files, threads=args.threads, runs=args.runs, rounds=args.rounds)
    binaries = [r for r in results.values() if r["binary"]]
    floats = [r for r in results.values() if not r["binary"]]
    if len(binaries) == 1 and len(floats) == 1:
        print(f"float / LCE: latency {floats[0]['latency_ms'] / binaries[0]['latency_ms']:.2f}x, "
              f"size {floats[0]['size_bytes'] / binaries[0]['size_bytes']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "models": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
