"""The thesis' progressive block-wise distillation of a binary ResNet-20 on CIFAR-10.

Methods I (progressive block-wise KD), II (LIT) and III (stage-by-stage KD) of the thesis
"Training Binary Deep Neural Networks Using Knowledge Distillation" (METHODS.md section 5),
through `kerasbnn.distill.ProgressiveDistiller`. The student is the teacher's ResNet-20 with
binary (XNOR++-scaled) convolutions in "double ReLU" blocks, initialised from the float
teacher; each stage is distilled in turn, then the whole binary network is trained with CE.

Method I at stage s: loss beta * MSE(student stage s, teacher stage s) + (1 - beta) * CE of
the hybrid network [binary stages 1..s | float stages s+1..3].

Thesis settings (the defaults): Adam, batch 256; 40 epochs per sub-network, lr 0.01 /10 at
epochs 20/30/35; beta = 0.4 (method I's best); then 120 epochs of CE, lr 0.01 /10 at
70/90/100/110. The float teacher is read from `<out>/teacher.keras` when present, else
trained first for `--teacher-epochs` with the CE recipe (the thesis starts from a trained
float ResNet-20 and does not give its recipe).

    .venv/bin/python examples/progressive_cifar10.py --method I --feature-weight 0.4
    .venv/bin/python examples/progressive_cifar10.py --method II
    .venv/bin/python examples/progressive_cifar10.py --smoke      # seconds, on Fashion-MNIST
"""

import os
import sys

import _common
import keras

from kerasbnn import distill, models

STAGE_EPOCHS, STAGE_BOUNDARIES = 40, (20, 30, 35)
FINAL_EPOCHS, FINAL_BOUNDARIES = 120, (70, 90, 100, 110)


def parse(argv):
    p = _common.parser(__doc__.splitlines()[0], epochs=STAGE_EPOCHS, batch_size=256,
                       learning_rate=0.01, weight_decay=0.0, out="runs/progressive_cifar10")
    p.add_argument("--method", choices=("I", "II", "III"), default="I")
    p.add_argument("--feature-weight", type=float, default=0.4,
                   help="weight of the block MSE (I, II; the thesis' beta)")
    p.add_argument("--trainable", choices=("active", "cumulative"), default="cumulative",
                   help="train stages 1..s (the thesis' sub-network s), or only stage s "
                        "(methods I and III)")
    p.add_argument("--final-epochs", type=int, default=FINAL_EPOCHS,
                   help="epochs of the final CE training of the whole binary network")
    p.add_argument("--teacher-epochs", type=int, default=FINAL_EPOCHS)
    p.add_argument("--block", default="double_relu",
                   help="student block: double_relu (the thesis' best), single_relu, naive, abs")
    p.add_argument("--binary", default="xnorpp", help="binarization scheme of the student")
    args = p.parse_args(argv)
    _common.check_args(args)
    if args.final_epochs < 0:
        raise ValueError(f"--final-epochs must be >= 0, received {args.final_epochs}.")
    return _common.apply_smoke(args, final_epochs=1, teacher_epochs=1)


def main(argv=None):
    args = parse(argv)
    _common.setup(args)
    train, val, info = _common.load_data(args, "cifar10")
    steps = _common.steps_per_epoch(train)
    width = dict(width_multiplier=_common.SMOKE_WIDTH) if args.smoke else {}
    compile_kwargs = _common.compile_kwargs(args)

    def adam(epochs, paper_epochs, boundaries):
        boundaries = _common.scaled_boundaries(boundaries, paper_epochs, epochs)
        return _common.optimizer("adam", _common.step_schedule(args.lr, boundaries, steps),
                                 args.weight_decay)

    teacher_path = os.path.join(args.out, "teacher.keras")
    if os.path.exists(teacher_path):
        teacher = keras.models.load_model(teacher_path)
    else:
        with _common.Timer("float teacher"):
            teacher = models.resnet20(info.input_shape, info.num_classes, bits=32, **width)
            teacher.compile(adam(args.teacher_epochs, FINAL_EPOCHS, FINAL_BOUNDARIES),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            metrics=["accuracy"], **compile_kwargs)
            teacher.fit(train, validation_data=val, epochs=args.teacher_epochs, verbose=2,
                        shuffle=False)
        _common.save_atomically(teacher, teacher_path)
    print(f"[float teacher] top-1 {_common.accuracy(teacher, val):.4f}")

    student = models.resnet20(info.input_shape, info.num_classes, bits=1, binary=args.binary,
                              block=args.block, **width)
    distiller = distill.ProgressiveDistiller(
        student, teacher, method=args.method, feature_weight=args.feature_weight, trainable=args.trainable,
        optimizer=lambda: adam(args.epochs, STAGE_EPOCHS, STAGE_BOUNDARIES),
        final_optimizer=lambda: adam(args.final_epochs, FINAL_EPOCHS, FINAL_BOUNDARIES),
        jit_compile=compile_kwargs["jit_compile"])
    with _common.Timer(f"progressive method {args.method}"):
        distiller.fit(train, epochs_per_stage=args.epochs, final_epochs=args.final_epochs,
                      validation_data=val, verbose=2, shuffle=False)
    return _common.finish(distiller.student, args, val)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
