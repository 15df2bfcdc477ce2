"""Verified LCE export of every binary zoo student, over several seeds: does it hold?

Each builder is built fresh (`bits=1`) at `--shape` with `--classes` classes under each seed
(`keras.utils.set_random_seed`), then converted with `kerasbnn.lce_convert` and its default
verification (random normal sample, seeded). One JSON line per conversion: whether it
passed, the LceBconv2d count against the binary layers, the free max |Keras - LCE|, the top-1
agreement, the bits LCE rounded the other way (first layer and margin), and the forced
difference. The last line counts passes.

Example (the setting of issue 15's probe, ~7 min on 2 idle cores):
    python benchmarks/zoo_conversion.py --shape 64 64 3 --classes 100 --seeds 5 \
        --json benchmarks/results/zoo_conversion.json
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from kerasbnn import export, models  # noqa: E402

BINARY_BUILDERS = ("alexnet", "bireal_resnet18", "quicknet", "reactnet_a", "reactnet_resnet18",
                   "resnet18", "resnet20", "vgg_small")


def convert_one(name, seed, shape, classes, folder):
    keras.utils.set_random_seed(seed)
    model = models.get(name)(shape, classes, bits=1)
    start = time.perf_counter()
    row = {"model": name, "seed": seed}
    try:
        report = export.lce_convert(model, os.path.join(folder, f"{name}.tflite"), seed=seed)
    except export.ExportError as error:
        return {**row, "passed": False, "error": str(error).splitlines()[0]}
    return {
        **row, "passed": True, "bconv_ops": report.bconv_ops,
        "binary_layers": len(report.binary_layers), "max_abs_diff": report.max_abs_diff,
        "top1_agreement": report.top1_agreement, "first_flip": report.first_flip,
        "flipped_bits": sum(report.flipped_bits.values()), "max_flip_margin":
        report.max_flip_margin, "forced_max_abs_diff": report.forced_max_abs_diff,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 3))
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=BINARY_BUILDERS, choices=BINARY_BUILDERS)
    parser.add_argument("--json", help="write every row to this file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            for seed in range(args.seeds):
                rows.append(convert_one(name, seed, tuple(args.shape), args.classes, folder))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    passed = sum(row["passed"] for row in rows)
    flips = sum(row.get("first_flip") is not None for row in rows)
    print(f"{passed}/{len(rows)} verified conversions; {flips} with rounding flips", flush=True)
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
