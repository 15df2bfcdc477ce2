"""Ranks the levers of the binary student's training recipe on validation, one at a time.

    python benchmarks/recipe_ablation.py --root /work/runs/ablation --seeds 0 \\
        --arms "base;block=bireal;block=reactnet"
    python benchmarks/recipe_ablation.py --root /work/runs/ablation --seeds 0,1 \\
        --base block=bireal --arms "base;lr=0.005;kd=1.0;two_step=true"

Each arm is the base recipe (`Recipe`'s defaults, then `--base`) with a few fields changed
(`key=value,key=value`; `base` is the base alone). Every arm of a seed starts from the same
float network of its block (trained once on the same training images and cached in `--root`),
copied into the binary ResNet-20 with BatchNorm recomputed (`kerasbnn.transfer.from_float`), and
sees the same batches. Hyper-parameters are ranked on a validation split carved from the
training images (`kerasbnn.data.validation_mask`, 10%); the test split is never read. Results
go to `--root/arms/<arm>__s<seed>.json` as they finish: run the same command again to go on.
The last lines are a table: validation accuracy per seed (after recomputing BatchNorm over
10,000 training images in batches of 1,000), and each arm's per-seed difference to `base`.
Minutes depend on what else runs on the machine; accuracies do not.
"""

import argparse
import dataclasses
import json
import os
import time

import numpy as np

import keras

from kerasbnn import data as datasets
from kerasbnn import models
from kerasbnn.distill import teacher_logits as cached_logits
from kerasbnn.distill.schedules import float_weight_copy
from kerasbnn.transfer import copy_matching_weights, from_float
from kerasbnn.utils.batch_norm import precise_batch_norm

DATASET = "fashion_mnist"


@dataclasses.dataclass
class Recipe:
    """One binary student's training: the levers the ablation turns (issue #31)."""

    block: str = "basic"          # resnet20's block: basic (thesis), bireal, reactnet
    binary: str = "bireal"        # student.binary
    lr: float = 2e-3              # peak learning rate
    schedule: str = "cosine"      # cosine or linear decay to 0
    warmup: float = 0.0           # epochs of linear warm-up from 0
    optimizer: str = "adam"       # adam, adamw (decoupled weight decay on every weight)
    weight_decay: float = 0.0
    batch_size: int = 128
    kd: float = 0.0               # weight of the float teacher's softmax in the target
    label_smoothing: float = 0.0
    augment: bool = False
    two_step: bool = False        # ReActNet: half the epochs with float weights first
    bf16: bool = False            # mixed bfloat16

    def with_changes(self, text):
        fields = {f.name: f.type for f in dataclasses.fields(self)}
        changes = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            if key not in fields:
                raise SystemExit(f"unknown lever {key!r}; levers: {', '.join(fields)}")
            kind = type(getattr(self, key))
            changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        return dataclasses.replace(self, **changes)


def split_masks(images, seed=0):
    """(train keep mask, validation keep mask) over the 60,000 training images: 10%
    validation, then the first `images` of the rest for training."""
    val = datasets.validation_mask(60000, 0.1, seed)
    train = ~val & (np.cumsum(~val) <= images)
    return train, val


def batches(keep, batch_size, *, seed=None, augment=False, index=False, shuffle=True):
    return datasets.load(DATASET, "train", batch_size, keep=keep, seed=seed, augment=augment,
                         shuffle=shuffle, index=index)


def float_network(args, block, train):
    """The float ResNet-20 of `block`, trained `--float-epochs` on the training images with
    cosine Adam at 2e-3, cached as `float_<block>_e<epochs>.keras`."""
    path = os.path.join(args.floats, f"float_{block}_e{args.float_epochs}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(1234)
    model = models.get("resnet20")((28, 28, 1), 10, bits=32, block=block,
                                   width_multiplier=args.width)
    steps = int(train.sum()) // 128 * args.float_epochs
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(batches(train, 128, seed=1234), epochs=args.float_epochs, verbose=2)
    model.save(path)
    return model


def learning_rate(recipe, steps_per_epoch, epochs):
    total = steps_per_epoch * epochs
    warm = int(recipe.warmup * steps_per_epoch)
    if recipe.schedule == "linear":
        decay = keras.optimizers.schedules.PolynomialDecay(recipe.lr, total - warm, 0.0)
        if not warm:
            return decay
        raise SystemExit("warm-up is implemented for the cosine schedule only")
    if warm:
        return keras.optimizers.schedules.CosineDecay(0.0, total - warm, warmup_target=recipe.lr,
                                                      warmup_steps=warm)
    return keras.optimizers.schedules.CosineDecay(recipe.lr, total)


def optimizer(recipe, steps_per_epoch, epochs):
    rate = learning_rate(recipe, steps_per_epoch, epochs)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=recipe.weight_decay)
    return keras.optimizers.Adam(rate)


def targets(recipe, train, teacher_logits, seed):
    """Training batches `(x, target distribution)`: the one-hot label, mixed with the float
    teacher's softmax at weight `kd` (kd=1: ReActNet's distributional loss, KL only)."""
    import tensorflow as tf

    soft = tf.constant(keras.ops.convert_to_numpy(keras.ops.softmax(teacher_logits)))
    kd = recipe.kd

    def mix(x, y, i):
        onehot = tf.one_hot(y, 10)
        return x, onehot if kd == 0 else (1 - kd) * onehot + kd * tf.gather(soft, i)

    ds = batches(train, recipe.batch_size, seed=seed, augment=recipe.augment, index=True)
    return ds.map(mix)


def compile_student(model, recipe, steps_per_epoch, epochs):
    model.compile(optimizer(recipe, steps_per_epoch, epochs),
                  keras.losses.CategoricalCrossentropy(from_logits=True,
                                                       label_smoothing=recipe.label_smoothing),
                  metrics=["categorical_accuracy"])
    return model


def train_arm(args, recipe, seed, teacher, teacher_logits, train, val):
    """Trains one arm; returns its record (curve, seconds, final validation accuracy)."""
    keras.config.set_dtype_policy("mixed_bfloat16" if recipe.bf16 else "float32")
    keras.utils.set_random_seed(seed)
    student = models.get("resnet20")((28, 28, 1), 10, bits=1, binary=recipe.binary,
                                     block=recipe.block, width_multiplier=args.width)
    from_float(teacher, student, batches(train, 128, seed=seed, shuffle=False), 20)
    steps = int(train.sum()) // recipe.batch_size + 1
    data = targets(recipe, train, teacher_logits, seed)
    val_ds = batches(val, 500, shuffle=False).map(lambda x, y: (x, keras.ops.one_hot(y, 10)))
    phases = [(student, args.epochs)]
    if recipe.two_step:
        first = args.epochs // 2
        phases = [(float_weight_copy(student), first), (student, args.epochs - first)]
    curve, seconds = [], []
    for i, (model, epochs) in enumerate(phases):
        if i:
            copy_matching_weights(phases[i - 1][0], model)
        compile_student(model, recipe, steps, epochs)
        for _ in range(epochs):
            start = time.perf_counter()
            history = model.fit(data, validation_data=val_ds, epochs=1, verbose=0)
            seconds.append(time.perf_counter() - start)
            curve.append(float(history.history["val_categorical_accuracy"][-1]))
            print(f"  epoch {len(curve)}: val {curve[-1]:.4f} train "
                  f"{history.history['categorical_accuracy'][-1]:.4f} ({seconds[-1]:.0f} s)",
                  flush=True)
    precise_batch_norm(student, lambda size: batches(train, size, shuffle=False), 10000)
    final = float(student.evaluate(val_ds, verbose=0)[1])
    keras.config.set_dtype_policy("float32")
    return {"recipe": dataclasses.asdict(recipe), "seed": seed, "val_curve": curve,
            "epoch_seconds": seconds, "val_accuracy": final}


def run(args):
    train, val = split_masks(args.images)
    base = Recipe().with_changes(args.base)
    teachers = {}
    for name in args.arms:
        recipe = base if name == "base" else base.with_changes(name)
        if recipe.block not in teachers:
            model = float_network(args, recipe.block, train)
            table = cached_logits(model, batches(train, 500, shuffle=False))[:, 0]
            teachers[recipe.block] = (model, table)
            val_ds = batches(val, 500, shuffle=False)
            print(f"float {recipe.block}: val {model.evaluate(val_ds, verbose=0)[1]:.4f}")
        for seed in args.seeds:
            path = os.path.join(args.root, "arms", f"{name.replace('/', '_')}__s{seed}.json")
            if os.path.exists(path):
                continue
            print(f"[{name}] seed {seed}: {recipe}", flush=True)
            record = train_arm(args, recipe, seed, *teachers[recipe.block], train, val)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".partial", "w") as f:
                json.dump(record, f, indent=1)
            os.replace(path + ".partial", path)


def table(args):
    """Prints each arm's validation accuracy per seed and its per-seed difference to `base`."""
    def result(name, seed):
        path = os.path.join(args.root, "arms", f"{name.replace('/', '_')}__s{seed}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)["val_accuracy"] * 100

    print(f"{'arm':32s} " + " ".join(f"seed {s:>3}" for s in args.seeds) + "  diff to base")
    for name in args.arms:
        accs = [result(name, s) for s in args.seeds]
        bases = [result("base", s) for s in args.seeds]
        diffs = [a - b for a, b in zip(accs, bases) if a is not None and b is not None]
        cells = " ".join("   --   " if a is None else f"{a:8.2f}" for a in accs)
        diff = " ".join(f"{d:+.2f}" for d in diffs) if name != "base" else ""
        print(f"{name:32s} {cells}  {diff}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="results and cached floats (resumed)")
    parser.add_argument("--arms", default="base", help="arms separated by ';'")
    parser.add_argument("--base", default="", help="the base recipe's changes, key=value,...")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=20000, help="training images")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--float-epochs", type=int, default=6)
    args = parser.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(";") if a.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.floats = os.path.join(args.root, f"w{args.width}_i{args.images}")
    args.root = os.path.join(args.floats, f"e{args.epochs}",
                             args.base.replace(",", "+").replace("=", "-") or "default")
    os.makedirs(args.floats, exist_ok=True)
    run(args)
    table(args)


if __name__ == "__main__":
    main()
