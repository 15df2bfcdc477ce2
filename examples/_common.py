"""Shared plumbing of the example scripts: flags, data, optimizers, teachers, export.

Every example is a thin script over the library; what they have in common (the `--smoke`
mode, step learning-rate schedules given in epochs, training or loading multi-bit teachers,
the final save + LCE conversion) lives here so each script shows only its method.

Smoke mode replaces the dataset with a few batches of the real Fashion-MNIST files (local)
or, for ImageNet, with `tensorflow_datasets.testing.mock_data` (random images of the right
format), shrinks the networks with `width_multiplier` and runs one short epoch per phase,
so a script proves in seconds that it runs end to end.
"""

import argparse
import contextlib
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import kerasbnn  # noqa: E402
from kerasbnn import data, export, models  # noqa: E402
from kerasbnn.pipeline import evaluate as accuracy  # noqa: E402,F401 (the one top-1 accuracy)
from kerasbnn.training import save_atomically  # noqa: E402,F401 (used by the scripts)

SMOKE_TRAIN_EXAMPLES = 64
SMOKE_TEST_EXAMPLES = 32
SMOKE_BATCH_SIZE = 16
SMOKE_WIDTH = 0.25


def parser(description, *, epochs, batch_size, learning_rate, weight_decay, out):
    """An `argparse.ArgumentParser` with the flags every example shares.

    Args:
        description: the script's one-line summary.
        epochs, batch_size, learning_rate, weight_decay: the paper's values (defaults).
        out: default run directory.

    Returns:
        The parser; scripts add their own flags.
    """
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    p.add_argument("--batch-size", type=int, default=batch_size, help="examples per batch")
    p.add_argument("--lr", type=float, default=learning_rate, help="initial learning rate")
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="decoupled weight decay of the optimizer")
    p.add_argument("--out", default=out, help="run directory (student .keras, .tflite, teachers)")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--seed", type=int, default=0, help="seed of shuffling, augmentation, init")
    p.add_argument("--convert", action=argparse.BooleanOptionalAction, default=None,
                   help="convert the student with LCE at the end (default: on, off in --smoke)")
    p.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="XLA compilation of the train step (Keras' jit_compile; off in --smoke, "
                   "where compiling costs more than the few steps)")
    p.add_argument("--smoke", action="store_true",
                   help="a few steps on tiny data and networks, to check the script runs")
    return p


def compile_kwargs(args):
    """`compile` arguments from the flags: `jit_compile`, and eager execution in smoke mode.

    A few smoke steps run faster eagerly than through a traced (let alone XLA-compiled)
    train step: tracing a ResNet-20 costs about 10 s of CPU, four eager steps about 2 s.
    """
    return {
        "jit_compile": {"auto": "auto", "true": True, "false": False}[args.jit_compile],
        "run_eagerly": bool(args.smoke),
    }


def check_args(args):
    """Raises ValueError for flags that cannot work, before anything is built."""
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be at least 1, received {getattr(args, name)}.")
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, received {args.lr}.")
    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay must be >= 0, received {args.weight_decay}.")


def setup(args):
    """Seeds Python, NumPy and the backend with `--seed` and creates the run directory."""
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)


def apply_smoke(args, **overrides):
    """In `--smoke` mode, shrinks the run: one epoch, small batches, plus `overrides`."""
    if not args.smoke:
        return args
    args.epochs = 1
    args.batch_size = SMOKE_BATCH_SIZE
    args.jit_compile = "false"
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@contextlib.contextmanager
def mock_imagenet():
    """ImageNet replaced by `tfds.testing.mock_data` in a temporary tfds data directory.

    Yields:
        The data directory to pass to `kerasbnn.data.load(..., data_dir=...)`; it holds empty
        stand-ins for the manual-download tar files, which `load` checks before reading.
    """
    import tensorflow_datasets as tfds

    from kerasbnn.data import imagenet

    with tempfile.TemporaryDirectory(prefix="kerasbnn_mock_imagenet_") as data_dir:
        manual = imagenet.manual_dir(data_dir)
        os.makedirs(manual)
        for name in imagenet.MANUAL_FILES:
            open(os.path.join(manual, name), "wb").close()
        with tfds.testing.mock_data(num_examples=SMOKE_TRAIN_EXAMPLES):
            yield data_dir


def _smoke_substitute(args, dataset):
    """`(dataset, train limit, test limit)`: in smoke mode a CIFAR dataset becomes
    Fashion-MNIST and every split is cut to a few examples; otherwise as given, uncut."""
    if not args.smoke:
        return dataset, None, None
    if not dataset.startswith("imagenet"):
        dataset = "fashion_mnist"
    return dataset, SMOKE_TRAIN_EXAMPLES, SMOKE_TEST_EXAMPLES


def load_data(args, dataset, data_dir=None, validation_split="test"):
    """Training and validation pipelines, plus the dataset's `DatasetInfo`.

    In smoke mode a CIFAR dataset is replaced by Fashion-MNIST (28x28x1, 10 classes, real
    local files), and every split is cut to a few examples.

    Returns:
        `(train_ds, val_ds, info)`.
    """
    dataset, limit_train, limit_test = _smoke_substitute(args, dataset)
    data_dir = data_dir or args.data_dir
    train = data.load(dataset, "train", args.batch_size, seed=args.seed, data_dir=data_dir,
                      limit=limit_train)
    val = data.load(dataset, validation_split, args.batch_size, data_dir=data_dir,
                    limit=limit_test)
    return train, val, data.info(dataset)


def plain_train(args, dataset, data_dir=None):
    """`batches(batch_size)`: the training images of `load_data`, in order and without
    augmentation (BatchNorm recomputation, `kerasbnn.utils.precise_batch_norm`)."""
    dataset, limit, _ = _smoke_substitute(args, dataset)
    data_dir = data_dir or args.data_dir
    return lambda batch_size: data.load(dataset, "train", batch_size, augment=False,
                                        shuffle=False, data_dir=data_dir, limit=limit)


def steps_per_epoch(dataset):
    """Number of batches of a finite dataset."""
    steps = int(dataset.cardinality())
    if steps < 1:
        raise ValueError("The training dataset has an unknown or empty length.")
    return steps


def step_schedule(learning_rate, boundaries, steps, factor=0.1):
    """The learning rate divided by 1/`factor` at each epoch of `boundaries`.

    Args:
        learning_rate: the initial rate.
        boundaries: epochs (increasing) after which the rate drops.
        steps: batches per epoch.
        factor: multiplier at each boundary (0.1: "/10 at ...").

    Returns:
        A `keras.optimizers.schedules.PiecewiseConstantDecay` (or the float itself when there
        are no boundaries).
    """
    if not boundaries:
        return learning_rate
    values = [learning_rate * factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(b * steps) for b in boundaries], values
    )


def scaled_boundaries(boundaries, paper_epochs, epochs):
    """The paper's decay epochs rescaled to a run of `epochs` (same fractions of training)."""
    return [b * epochs / paper_epochs for b in boundaries]


def optimizer(name, schedule, weight_decay, momentum=0.9):
    """SGD (momentum) or Adam with decoupled weight decay, sparing the fusion weights.

    MAD's delta and CMT-KD's pi are softmax logits (`TeacherFusion.theta`); decaying them
    would pull the fusion towards uniform, which neither paper does.
    """
    wd = weight_decay or None
    if name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=wd)
    elif name == "adam":
        opt = keras.optimizers.Adam(schedule, weight_decay=wd)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', received {name!r}.")
    if wd:
        opt.exclude_from_weight_decay(var_names=["theta"])
    return opt


def teachers(builder, bits_list, info, args, *, train_ds, val_ds, make_optimizer, epochs,
             **builder_kwargs):
    """Multi-bit teachers: loaded from `<out>/teachers/w<b>a<b>.keras`, else trained and saved.

    Args:
        builder: zoo builder name.
        bits_list: teacher bit widths (32 = float).
        info: the dataset's `DatasetInfo`.
        args: parsed flags (`out`).
        train_ds, val_ds: data.
        make_optimizer: zero-argument callable giving a fresh optimizer.
        epochs: training epochs of each teacher.
        **builder_kwargs: other builder arguments (quantizer, width_multiplier, ...).

    Returns:
        The list of teacher models, in `bits_list` order.
    """
    build = models.get(builder)
    result = []
    for bits in bits_list:
        path = os.path.join(args.out, "teachers", f"w{bits}a{bits}.keras")
        if os.path.exists(path):
            print(f"[teacher {bits}-bit] loading {path}")
            result.append(keras.models.load_model(path))
            continue
        print(f"[teacher {bits}-bit] training {builder} for {epochs} epochs")
        model = build(info.input_shape, info.num_classes, bits=bits, **builder_kwargs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(make_optimizer(), loss, metrics=["accuracy"], **compile_kwargs(args))
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2, shuffle=False)
        save_atomically(model, path)
        result.append(model)
    return result


def finish(student, args, val_ds, name="student"):
    """Evaluates, saves `<out>/<name>.keras` and, unless disabled, converts it with LCE.

    Returns:
        `{"accuracy": float, "keras": path, "tflite": path or None, "report": ConversionReport
        or None}`; the same facts are printed.
    """
    acc = accuracy(student, val_ds)
    os.makedirs(args.out, exist_ok=True)
    keras_path = os.path.join(args.out, f"{name}.keras")
    save_atomically(student, keras_path)
    print(f"[{name}] top-1 {acc:.4f}; saved {keras_path}")
    result = {"accuracy": acc, "keras": keras_path, "tflite": None, "report": None}
    convert = (not args.smoke) if args.convert is None else args.convert
    if convert:
        sample = next(iter(val_ds))[0][:4].numpy()
        tflite_path = os.path.join(args.out, f"{name}.tflite")
        try:
            report = kerasbnn.lce_convert(student, tflite_path, sample=sample)
        except export.VerificationError as error:
            # Written anyway: a few flipped signs in a barely trained net are expected
            # (LCE.md section 4); the report says how many outputs differ.
            report = error.report
            with open(tflite_path, "wb") as f:
                f.write(report.flatbuffer)
            report.path = tflite_path
            print(f"[{name}] warning: {error}")
        print(report)
        result.update(tflite=tflite_path, report=report)
    return result


class Timer:
    """Wall-clock seconds of a `with` block, printed at exit."""

    def __init__(self, label):
        self.label = label

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        print(f"[{self.label}] {self.seconds:.1f} s")
        return False
