"""MAD on CIFAR: a binary ResNet-20 or VGG-Small distilled from 32/8/4/2-bit teachers.

Multi-bit adaptive distillation (Nie, Han, Wang, BMVC 2021; METHODS.md section 3) with
`kerasbnn.distill.MultiTeacherDistiller`: the student learns from frozen DoReFa teachers of
its own architecture, with learned fusion weights delta per distillation point (every
stage output of ResNet-20, every max-pool output of VGG-Small) and for the logits:

    L = CE + alpha KL(softmax(y^t / T) || softmax(y^s / T)) + beta sum_i smoothL1(F_i^t - r_i(F_i^s))

Paper settings (the defaults): SGD momentum 0.9, batch 128, 400 epochs;
ResNet-20 lr 0.1 /10 at epochs 200/300/375, weight decay 1e-4; VGG-Small lr 0.01 /10 at
100/200/300, weight decay 5e-4; alpha = 1, beta = 0.2 (CIFAR-10) or 0.1 (CIFAR-100);
T = 1 (not stated in the paper). The student is a DoReFa BNN (w = mean|w| sign(w),
a = round(clip(a, 0, 1))) with float first and last layers. The paper's teachers are
pre-trained: the script trains them with the student's recipe unless
`<out>/teachers/w<b>a<b>.keras` already exist (put your own there to reuse them).

    .venv/bin/python examples/mad_cifar.py --arch resnet20 --dataset cifar10
    .venv/bin/python examples/mad_cifar.py --arch vgg_small --dataset cifar100 --epochs 100
    .venv/bin/python examples/mad_cifar.py --smoke      # seconds, on local Fashion-MNIST
"""

import sys

import _common

from kerasbnn import distill, models

PAPER = {
    "resnet20": dict(lr=0.1, boundaries=(200, 300, 375), weight_decay=1e-4),
    "vgg_small": dict(lr=0.01, boundaries=(100, 200, 300), weight_decay=5e-4),
}
PAPER_EPOCHS = 400
FEATURE_WEIGHT = {"cifar10": 0.2, "cifar100": 0.1}  # MAD's beta


def parse(argv):
    p = _common.parser(__doc__.splitlines()[0], epochs=PAPER_EPOCHS, batch_size=128,
                       learning_rate=None, weight_decay=None, out="runs/mad_cifar")
    p.add_argument("--arch", choices=sorted(PAPER), default="resnet20")
    p.add_argument("--dataset", choices=sorted(FEATURE_WEIGHT), default="cifar10")
    p.add_argument("--teacher-bits", type=int, nargs="+", default=[32, 8, 4, 2],
                   help="bit widths of the DoReFa teachers")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="epochs of each teacher (default: --epochs)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of L_KL (MAD's alpha)")
    p.add_argument("--feature-weight", type=float, default=None,
                   help="weight of L_Dis (default: per dataset)")
    p.add_argument("--temperature", type=float, default=1.0, help="T of L_KL (unconfirmed)")
    p.add_argument("--fusion", default="learned", help="'learned' (MAD) or 'average'")
    args = p.parse_args(argv)
    paper = PAPER[args.arch]
    args.lr = paper["lr"] if args.lr is None else args.lr
    args.weight_decay = paper["weight_decay"] if args.weight_decay is None else args.weight_decay
    args.feature_weight = (FEATURE_WEIGHT[args.dataset] if args.feature_weight is None
                           else args.feature_weight)
    args.teacher_epochs = args.teacher_epochs or args.epochs
    _common.check_args(args)
    return _common.apply_smoke(args, teacher_bits=args.teacher_bits[:2], teacher_epochs=1)


def main(argv=None):
    args = parse(argv)
    _common.setup(args)
    train, val, info = _common.load_data(args, args.dataset)
    steps = _common.steps_per_epoch(train)
    paper = PAPER[args.arch]
    width = dict(width_multiplier=_common.SMOKE_WIDTH) if args.smoke else {}

    def make_optimizer(epochs):
        boundaries = _common.scaled_boundaries(paper["boundaries"], PAPER_EPOCHS, epochs)
        schedule = _common.step_schedule(args.lr, boundaries, steps)
        return _common.optimizer("sgd", schedule, args.weight_decay)

    with _common.Timer("teachers"):
        teachers = _common.teachers(
            args.arch, args.teacher_bits, info, args, train_ds=train, val_ds=val,
            make_optimizer=lambda: make_optimizer(args.teacher_epochs),
            epochs=args.teacher_epochs, quantizer="dorefa", **width)
    student = models.get(args.arch)(info.input_shape, info.num_classes, bits=1,
                                    binary="dorefa", **width)
    distiller = distill.MultiTeacherDistiller(
        student, teachers, feature_taps="auto", fusion=args.fusion, kl_weight=args.kl_weight,
        feature_weight=args.feature_weight, temperature=args.temperature)
    distiller.compile(make_optimizer(args.epochs), metrics=["accuracy"],
                      **_common.compile_kwargs(args))
    with _common.Timer("distillation"):
        distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=2, shuffle=False,
                      callbacks=[distill.DeltaHistory(f"{args.out}/delta_history.csv")])
    for key, delta in distiller.deltas().items():
        print(f"[delta] {key}: " + " ".join(
            f"{bits}-bit {d:.3f}" for bits, d in zip(args.teacher_bits, delta)))
    return _common.finish(distiller.student, args, val)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
