"""Binary ResNet-18 vs the same network in float, both converted to TFLite: latency and size.

    .venv/bin/python benchmarks/lce_latency.py [--runs 20] [--rounds 3] [--skip-larq]

Network: Bi-Real-style ResNet-18 at 224x224x3 with 1000 classes: float 7x7/2 stem conv + BN
+ ReLU + 3x3/2 max pool, four stages of 2 blocks (64, 128, 256, 512 filters), every 3x3
conv binary (ste_sign input and kernel, one-padding) + BN with its own shortcut, float
AvgPool + 1x1 conv + BN shortcuts where the shape changes, global average pool, float
Dense(1000). The float twin is the same graph without quantizers. A third copy is built with
larq 0.14 (tf.keras 2, in a child process with TF_USE_LEGACY_KERAS=1) and converted with LCE's
`convert_keras_model`, to check that kerasbnn's export is no slower than larq's.

The headline network is written here from kerasbnn.layers (and mirrored in larq) so that
the kerasbnn and larq copies are the same graph by construction; `--zoo` adds the zoo's
`kerasbnn.models.bireal_resnet18` (same topology) at 1 and 32 bits as extra rows.

Latency: LCE's Python interpreter, 1 thread, batch 1; binary models with the indirect BGEMM
kernel (the fast one on x86, LCE.md section 5), every model with XNNPACK for its float ops.
`kerasbnn.export.compare_latency` interleaves the models inference by inference, so load
from other processes falls on all of them alike; each of `--rounds` rounds gives one median
(or min, `--stat`) of `--runs` inferences per model, and the median over rounds is kept.
The last line reads `latency <float ms / binary ms>x size <float bytes / binary bytes>x`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

INPUT_SHAPE = (224, 224, 3)
NUM_CLASSES = 1000
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


def resnet18(layers, binary_conv, name):
    """Bi-Real ResNet-18 from a layers namespace (`keras.layers` or `tf.keras.layers`).

    Args:
        layers: the module providing Input-free layers (Conv2D, BatchNormalization, ...).
        binary_conv: `f(filters, strides, name) -> layer`, a 3x3 'same' convolution.
        name: model name.

    Returns:
        `(inputs, outputs)` tensors for the caller's Model class.
    """
    inputs = layers.Input(INPUT_SHAPE)
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (filters, first_stride) in enumerate(STAGES, start=1):
        for conv in range(4):
            stride = first_stride if conv == 0 else 1
            prefix = f"stage{stage}_conv{conv}"
            y = binary_conv(filters, stride, f"{prefix}_bconv")(x)
            y = layers.BatchNormalization(name=f"{prefix}_bn")(y)
            if stride != 1 or x.shape[-1] != filters:
                x = layers.AveragePooling2D(stride, name=f"{prefix}_shortcut_pool")(x)
                x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_shortcut_conv")(x)
                x = layers.BatchNormalization(name=f"{prefix}_shortcut_bn")(x)
            x = layers.Add(name=f"{prefix}_add")([x, y])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return inputs, outputs


def _randomize_batchnorm(model, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.normal(0, 0.3, n),
                    rng.normal(0, 0.3, n),
                    rng.uniform(0.5, 2, n),
                ]
            )


def build_kerasbnn(binary):
    import keras

    keras.utils.set_random_seed(0)
    from kerasbnn.layers import QuantConv2D

    def conv(filters, strides, name):
        if not binary:
            return keras.layers.Conv2D(
                filters, 3, strides=strides, padding="same", use_bias=False, name=name
            )
        return QuantConv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            pad_values=1.0,
            use_bias=False,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            name=name,
        )

    inputs, outputs = resnet18(keras.layers, conv, "resnet18")
    model = keras.Model(inputs, outputs, name="binary_resnet18" if binary else "float_resnet18")
    _randomize_batchnorm(model, seed=0)
    return model


def larq_worker(path):
    """Child process (TF_USE_LEGACY_KERAS=1): larq 0.14 build, LCE conversion, written to `path`."""
    import larq
    import larq_compute_engine as lce
    import tensorflow as tf

    def conv(filters, strides, name):
        return larq.layers.QuantConv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            pad_values=1.0,
            use_bias=False,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
            name=name,
        )

    tf.keras.utils.set_random_seed(0)
    inputs, outputs = resnet18(tf.keras.layers, conv, "resnet18")
    model = tf.keras.Model(inputs, outputs, name="larq_binary_resnet18")
    _randomize_batchnorm(model, seed=0)
    with open(path, "wb") as f:
        f.write(lce.convert_keras_model(model))


def convert_with_larq(path):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--larq-worker", path],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        print(
            f"larq build/convert failed (exit {result.returncode}); "
            f"skipping the larq comparison:\n{tail}"
        )
        return False
    return True


def convert_with_kerasbnn(model, path):
    """`lce_convert` with the audit enforced and the numerics reported, not enforced.

    A random (untrained) deep binary net amplifies single sign flips caused by float
    summation order (LCE.md section 4), so a max-diff failure here is printed, not fatal.
    """
    from kerasbnn import export

    try:
        report = export.lce_convert(model, path, num_samples=2)
    except export.VerificationError as error:
        report = error.report
        with open(path, "wb") as f:
            f.write(report.flatbuffer)
        report.path = path
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed inferences per round (median)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; the median over rounds is kept"
    )
    parser.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="per-round statistic of the interleaved runs",
    )
    parser.add_argument("--skip-larq", action="store_true", help="do not build the larq copy")
    parser.add_argument(
        "--zoo",
        action="store_true",
        help="also time kerasbnn.models.bireal_resnet18 at bits=1 and bits=32 (extra rows)",
    )
    parser.add_argument(
        "--out", default=None, help="folder for the .tflite files (default: a temp folder)"
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--larq-worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def convert_all(args, out):
    """Converts the networks to time into `out`; returns `({key: .tflite path}, the binary
    network's conversion report)`."""
    from kerasbnn.export import list_ops

    files = {
        "kerasbnn_binary": os.path.join(out, "kerasbnn_binary_resnet18.tflite"),
        "float": os.path.join(out, "float_resnet18.tflite"),
        "larq_binary": os.path.join(out, "larq_binary_resnet18.tflite"),
    }
    binary_report = convert_with_kerasbnn(build_kerasbnn(binary=True), files["kerasbnn_binary"])
    print(binary_report)
    float_report = convert_with_kerasbnn(build_kerasbnn(binary=False), files["float"])
    print(f"float twin: {float_report.file_size} bytes, ops {float_report.op_counts}")
    if args.skip_larq or not convert_with_larq(files["larq_binary"]):
        del files["larq_binary"]
    else:
        print(
            f"larq-built binary: {os.path.getsize(files['larq_binary'])} bytes, "
            f"{list_ops(files['larq_binary']).count('LceBconv2d')} LceBconv2d"
        )
    if args.zoo:
        from kerasbnn import models

        for bits, key in ((1, "zoo_bireal_binary"), (32, "zoo_bireal_float")):
            files[key] = os.path.join(out, f"{key}.tflite")
            model = models.get("bireal_resnet18")(INPUT_SHAPE, NUM_CLASSES, bits=bits)
            _randomize_batchnorm(model, seed=0)
            report = convert_with_kerasbnn(model, files[key])
            print(
                f"{key}: {report.bconv_ops} LceBconv2d of {len(report.binary_layers)} binary layers"
            )
    return files, binary_report


def time_rounds(args, files):
    """`{key: [per-round latency in ms]}`: every round times all `files` interleaved."""
    from kerasbnn.export import compare_latency

    settings = {
        "zoo_bireal_binary": dict(use_indirect_bgemm=True, use_xnnpack=True),
        "zoo_bireal_float": dict(use_indirect_bgemm=False, use_xnnpack=True),
        "kerasbnn_binary": dict(use_indirect_bgemm=True, use_xnnpack=True),
        "larq_binary": dict(use_indirect_bgemm=True, use_xnnpack=True),
        "float": dict(use_indirect_bgemm=False, use_xnnpack=True),
    }
    models = {key: (path, settings[key]) for key, path in files.items()}
    medians = {key: [] for key in files}
    for _ in range(args.rounds):
        round_ms = compare_latency(models, num_threads=1, runs=args.runs, statistic=args.stat)
        for key, ms in round_ms.items():
            medians[key].append(ms)
    return medians


def main(argv=None):
    args = parse_args(argv)
    if args.larq_worker:
        larq_worker(args.larq_worker)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = args.out or tempfile.mkdtemp(prefix="kerasbnn_bench_")
    os.makedirs(out, exist_ok=True)
    files, binary_report = convert_all(args, out)
    medians = time_rounds(args, files)
    latency = {key: statistics.median(values) for key, values in medians.items()}
    size = {key: os.path.getsize(path) for key, path in files.items()}

    print(f"\n{'model':<20}{'latency ms':>11}{'size MB':>9}   {args.stat} of each round (ms)")
    for key in files:
        rounds = " ".join(f"{v:.1f}" for v in medians[key])
        print(f"{key:<20}{latency[key]:>11.2f}{size[key] / 1e6:>9.2f}   {rounds}")
    if "larq_binary" in files:
        print(
            "kerasbnn vs larq: latency "
            f"{latency['kerasbnn_binary'] / latency['larq_binary']:.2f}x of larq's, "
            f"size {size['kerasbnn_binary'] / size['larq_binary']:.3f}x of larq's"
        )
    latency_ratio = latency["float"] / latency["kerasbnn_binary"]
    size_ratio = size["float"] / size["kerasbnn_binary"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"latency_ms": latency, "rounds_ms": medians, "size_bytes": size,
                       "latency_ratio": latency_ratio, "size_ratio": size_ratio,
                       "binary_report": binary_report.to_dict()}, f, indent=2)
    print(f"latency {latency_ratio:.2f}x size {size_ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
