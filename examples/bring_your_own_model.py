"""Bring your own model: a float Keras CNN made binary with `kerasbnn.binarize`, then distilled.

The flow a Keras user follows with their own network (here a small CNN on Fashion-MNIST):

1. train (or load) the float model, an ordinary `keras.Model` returning logits (here its
   BatchNorm statistics are then recomputed, `kerasbnn.utils.recalibrate_batch_norm`);
2. `print(kerasbnn.binarize(model, dry_run=True))`: the plan, layer by layer (converted,
   kept float and why, rewritten), with the memory and operations before and after;
3. `student = kerasbnn.binarize(model)` (float weights as latent weights) and an 8-bit twin
   `kerasbnn.binarize(model, bits=8)` as a second teacher, fine-tuned briefly;
4. recompute the twins' BatchNorm statistics (`kerasbnn.utils.recalibrate_batch_norm`), then
   distil: `MultiTeacherDistiller(student, [model, teacher8], feature_taps=None)` (logits
   only: the user's model has no zoo taps), MAD's learned fusion of the two teachers;
5. convert with LCE, verified (`kerasbnn.lce_convert`), and print the accuracies.

    .venv/bin/python examples/bring_your_own_model.py
    .venv/bin/python examples/bring_your_own_model.py --smoke    # seconds, a few batches
"""

import sys

import _common
import keras

import kerasbnn
from kerasbnn import data, distill, utils


def float_cnn(input_shape, num_classes, width=64):
    """The "user's model": conv-BN-ReLU blocks, max pooling, global pooling, a dense head."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, (filters, pool) in enumerate([(width, False), (width, True), (2 * width, True),
                                         (4 * width, False)]):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if pool:
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="my_cnn")


def parse(argv):
    p = _common.parser(__doc__.splitlines()[0], epochs=8, batch_size=128, learning_rate=1e-3,
                       weight_decay=0.0, out="runs/bring_your_own_model")
    p.add_argument("--float-epochs", type=int, default=4, help="epochs of the float model")
    p.add_argument("--teacher-epochs", type=int, default=1, help="fine-tuning of the 8-bit twin")
    p.add_argument("--width", type=int, default=64, help="channels of the first conv")
    p.add_argument("--train-limit", type=int, default=None,
                   help="train on the first N training images only (a faster, rougher run)")
    args = p.parse_args(argv)
    _common.check_args(args)
    if args.float_epochs < 1 or args.teacher_epochs < 0:
        raise ValueError("--float-epochs must be at least 1 and --teacher-epochs at least 0.")
    if args.train_limit is not None and args.train_limit < args.batch_size:
        raise ValueError(f"--train-limit must be at least one batch ({args.batch_size}).")
    return _common.apply_smoke(args, float_epochs=1, teacher_epochs=1, width=8)


def _fit(model, args, train, val, epochs, label):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(args.lr), loss, metrics=["accuracy"],
                  **_common.compile_kwargs(args))
    with _common.Timer(label):
        model.fit(train, validation_data=val, epochs=epochs, verbose=2, shuffle=False)
    return model


def main(argv=None):
    args = parse(argv)
    _common.setup(args)
    train, val, info = _common.load_data(args, "fashion_mnist")
    plain = _common.plain_train(args, "fashion_mnist")(args.batch_size)
    if args.train_limit and not args.smoke:
        train = data.load("fashion_mnist", "train", args.batch_size, seed=args.seed,
                          data_dir=args.data_dir, limit=args.train_limit)
    model = _fit(float_cnn(info.input_shape, info.num_classes, args.width), args, train, val,
                 args.float_epochs, "float model")
    # A short run leaves the moving BatchNorm statistics behind the weights: recompute them.
    utils.recalibrate_batch_norm(model, plain, steps=20, jit_compile=False)

    print(kerasbnn.binarize(model, dry_run=True))
    student = kerasbnn.binarize(model)
    teacher8 = kerasbnn.binarize(model, bits=8)
    for twin in (student, teacher8):
        utils.recalibrate_batch_norm(twin, plain, steps=20, jit_compile=False)
    if args.teacher_epochs:
        _fit(teacher8, args, train, val, args.teacher_epochs, "8-bit twin")
    start = {"binary (no training)": _common.accuracy(student, val)}

    distiller = distill.MultiTeacherDistiller(student, [model, teacher8], feature_taps=None)
    steps = _common.steps_per_epoch(train)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.epochs * steps)
    distiller.compile(keras.optimizers.Adam(schedule), metrics=["accuracy"],
                      **_common.compile_kwargs(args))
    with _common.Timer("distillation"):
        distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=2, shuffle=False)

    accuracies = {"float": _common.accuracy(model, val), "8-bit": _common.accuracy(teacher8, val),
                  **start}
    result = _common.finish(distiller.student, args, val)
    accuracies["binary (distilled)"] = result["accuracy"]
    for name, value in accuracies.items():
        print(f"[accuracy] {name}: {value:.4f}")
    gap = 100 * (accuracies["binary (distilled)"] - accuracies["float"])
    print(f"[accuracy] binary - float: {gap:+.2f} pt")
    result["accuracies"] = accuracies
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
