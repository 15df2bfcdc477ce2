"""PKKD on CIFAR-10: an adder ResNet-20 distilled from a CNN twin trained alongside it.

Kernel-based progressive knowledge distillation (Xu et al., NeurIPS 2020, arXiv:2009.13044;
METHODS.md section 4) with `kerasbnn.distill.PKKDDistiller`: the AdderNet student
(Y = -sum |X - F|) and a CNN of the same architecture start from scratch and train together
(the progressive teacher); at the last adder/conv layer of every stage both outputs pass
through a kernel (CNN: exp(-Y_c / 2 sigma_c^2), ANN: exp(Y_a / sigma_a)) and a 1x1 transform
before an L2 distance, next to CE and a soft-logit term:

    L_a = CE(y_a, y) + tau^2 KL(softmax(sg y_c / tau) || softmax(y_a / tau)) + lambda sum_m L_m
    L_c = CE(y_c, y)

AdderNet settings (the defaults, from huawei-noah/AdderNet main.py): SGD momentum 0.9, weight
decay 5e-4, batch 256, 400 epochs, cosine learning rate from 0.1; adaptive learning-rate
scaling eta = 0.2 inside the adder layers. PKKD's sigma, tau, lambda and distilled layers are
not published (UNCONFIRMED): kerasbnn's defaults are per-channel batch statistics for sigma
with the exponent shifted by its channel maximum (kernel values in (0, 1]), tau = 1,
lambda = 10 (chosen on a Fashion-MNIST validation split among 0.1-100, `PKKDDistiller`), the
last layer of each stage. Reported: ANN 92.02 -> PKKD
92.96 top-1.

After training the student's BatchNormalization statistics are recomputed over training images
without augmentation, in batches of 1,000 (`--precise-bn`, the pipeline's `student.precise_bn`;
`kerasbnn.utils.precise_batch_norm`): the moving averages lag behind adder outputs whose means
are thousands of times their spread.

Adder layers have no TFLite kernel, so no `.tflite` is written unless `--convert` is given
(the flatbuffer then computes |x - f| with float ops).

    .venv/bin/python examples/pkkd_cifar10.py
    .venv/bin/python examples/pkkd_cifar10.py --no-pkkd          # the adder network alone
    .venv/bin/python examples/pkkd_cifar10.py --smoke            # seconds, on Fashion-MNIST
"""

import argparse
import sys

import _common
import keras

from kerasbnn import distill, models, utils


def parse(argv):
    p = _common.parser(__doc__.splitlines()[0], epochs=400, batch_size=256, learning_rate=0.1,
                       weight_decay=5e-4, out="runs/pkkd_cifar10")
    p.set_defaults(convert=False)
    p.add_argument("--pkkd", action=argparse.BooleanOptionalAction, default=True,
                   help="distil from the CNN twin (--no-pkkd trains the adder network alone)")
    p.add_argument("--feature-weight", type=float, default=10.0, help="lambda of the kernel term")
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of the soft-logit term")
    p.add_argument("--temperature", type=float, default=1.0, help="tau")
    p.add_argument("--transform", choices=("student", "both", "none"), default="student",
                   help="branches that get the 1x1 linear transform")
    p.add_argument("--no-kernel", dest="kernel", action="store_false",
                   help="compare the raw layer outputs (the paper's NK ablation)")
    p.add_argument("--frozen-teacher", action="store_true",
                   help="keep the CNN fixed (the NP ablation; load a trained one with --teacher)")
    p.add_argument("--teacher", help="a trained CNN twin (.keras) to start from")
    p.add_argument("--blocks-per-stage", type=int, default=3, help="3 gives ResNet-20")
    p.add_argument("--eta", type=float, default=0.2, help="adaptive learning-rate coefficient")
    p.add_argument("--precise-bn", type=int, default=10000,
                   help="training images (no augmentation) to recompute the student's "
                        "BatchNormalization statistics over after training, in batches of "
                        "1,000 (0: keep the moving averages)")
    args = p.parse_args(argv)
    _common.check_args(args)
    if args.precise_bn < 0:
        raise ValueError(f"--precise-bn must be 0 or more images, received {args.precise_bn}.")
    if args.blocks_per_stage < 1:
        raise ValueError(
            f"--blocks-per-stage must be at least 1, received {args.blocks_per_stage}.")
    if args.frozen_teacher and not args.teacher:
        raise ValueError(
            "--frozen-teacher needs --teacher: a frozen untrained CNN teaches nothing.")
    return _common.apply_smoke(args, blocks_per_stage=1)


def main(argv=None):
    args = parse(argv)
    _common.setup(args)
    train, val, info = _common.load_data(args, "cifar10")
    plain = _common.plain_train(args, "cifar10")
    steps = _common.steps_per_epoch(train)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.epochs * steps)
    optimizer = _common.optimizer("sgd", schedule, args.weight_decay)
    student = models.adder_resnet20(info.input_shape, info.num_classes,
                                    blocks_per_stage=args.blocks_per_stage, eta=args.eta)
    if args.pkkd:
        teacher = (keras.models.load_model(args.teacher) if args.teacher else
                   models.adder_resnet20(info.input_shape, info.num_classes, layer="conv",
                                         blocks_per_stage=args.blocks_per_stage))
        trainer = distill.PKKDDistiller(
            student, teacher, kernel=args.kernel, transform=args.transform,
            feature_weight=args.feature_weight, kl_weight=args.kl_weight,
            temperature=args.temperature, progressive_teacher=not args.frozen_teacher)
        trainer.compile(optimizer, metrics=["accuracy"], **_common.compile_kwargs(args))
    else:
        trainer = student
        trainer.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"], **_common.compile_kwargs(args))
    with _common.Timer("PKKD" if args.pkkd else "adder network alone"):
        history = trainer.fit(train, validation_data=val, epochs=args.epochs, verbose=2,
                              shuffle=False)
    if args.precise_bn:
        # adder outputs: means of thousands, spreads of a few units; the moving averages lag
        print(f"[student] val top-1 {_common.accuracy(student, val):.4f} with the moving "
              "BatchNormalization statistics; recomputing them")
        utils.precise_batch_norm(student, plain, args.precise_bn)
    if args.pkkd:
        print(f"[CNN teacher] train top-1 {history.history['teacher_accuracy'][-1]:.4f}, "
              f"val top-1 {_common.accuracy(teacher, val):.4f}")
        if not args.frozen_teacher:
            _common.save_atomically(teacher, f"{args.out}/teacher.keras")
    return _common.finish(student, args, val)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
