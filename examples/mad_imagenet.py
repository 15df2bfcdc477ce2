"""MAD on ImageNet: Bi-Real or ReActNet ResNet-18 distilled from 32/8/4/2-bit teachers.

Multi-bit adaptive distillation (Nie, Han, Wang, BMVC 2021; METHODS.md sections 3 and 6) with
`kerasbnn.distill.MultiTeacherDistiller`; teachers are DoReFa-quantized copies of the
student's own architecture, distilled at every stage output and at the logits.

Paper settings (the defaults): 120 epochs, learning rate /10 at epochs 70/90/110, Adam with
lr 0.002 (or `--optimizer sgd`: momentum 0.9, lr 0.2), no weight decay for the BNN,
alpha = 1, beta = 0.1, T = 1 (not stated in the paper). The batch size is not stated
(256 here). The ReActNet-ResNet student follows ReActNet's two-step scheme with the
multi-teacher loss (`kerasbnn.distill.reactnet_two_step`): real weights and binary
activations first, then binary weights initialised from step 1, each step `--epochs` long.
Reported top-1: Bi-Real 57.9, ReActNet-ResNet 66.5.

ImageNet needs the manual download of tensorflow-datasets (see `kerasbnn.data.imagenet`).
Teachers are read from `<out>/teachers/w<b>a<b>.keras` when present, else trained first.

    .venv/bin/python examples/mad_imagenet.py --arch bireal_resnet18 --data-dir ~/tensorflow_datasets
    .venv/bin/python examples/mad_imagenet.py --arch reactnet_resnet18 --optimizer adam
    .venv/bin/python examples/mad_imagenet.py --smoke    # seconds, on tfds mock data
"""

import contextlib
import sys

import _common

from kerasbnn import distill, models

PAPER_EPOCHS = 120
BOUNDARIES = (70, 90, 110)
LEARNING_RATE = {"adam": 2e-3, "sgd": 0.2}
ARCHS = ("bireal_resnet18", "reactnet_resnet18")


def parse(argv):
    p = _common.parser(__doc__.splitlines()[0], epochs=PAPER_EPOCHS, batch_size=256,
                       learning_rate=None, weight_decay=0.0, out="runs/mad_imagenet")
    p.add_argument("--arch", choices=ARCHS, default="bireal_resnet18")
    p.add_argument("--optimizer", choices=sorted(LEARNING_RATE), default="adam")
    p.add_argument("--teacher-bits", type=int, nargs="+", default=[32, 8, 4, 2])
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="epochs of each teacher (default: --epochs)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of L_KL (MAD's alpha)")
    p.add_argument("--feature-weight", type=float, default=0.1,
                   help="weight of L_Dis (MAD's beta)")
    p.add_argument("--temperature", type=float, default=1.0, help="T of L_KL (unconfirmed)")
    args = p.parse_args(argv)
    args.lr = LEARNING_RATE[args.optimizer] if args.lr is None else args.lr
    args.teacher_epochs = args.teacher_epochs or args.epochs
    _common.check_args(args)
    return _common.apply_smoke(args, teacher_bits=args.teacher_bits[:2], teacher_epochs=1)


def main(argv=None):
    args = parse(argv)
    _common.setup(args)
    with contextlib.ExitStack() as stack:
        data_dir = stack.enter_context(_common.mock_imagenet()) if args.smoke else args.data_dir
        train, val, info = _common.load_data(args, "imagenet2012", data_dir, "validation")
        return _run(args, train, val, info)


def _run(args, train, val, info):
    steps = _common.steps_per_epoch(train)
    width = dict(width_multiplier=_common.SMOKE_WIDTH) if args.smoke else {}

    def make_optimizer(epochs, weight_decay=args.weight_decay):
        boundaries = _common.scaled_boundaries(BOUNDARIES, PAPER_EPOCHS, epochs)
        schedule = _common.step_schedule(args.lr, boundaries, steps)
        return _common.optimizer(args.optimizer, schedule, weight_decay)

    with _common.Timer("teachers"):
        teachers = _common.teachers(
            args.arch, args.teacher_bits, info, args, train_ds=train, val_ds=val,
            make_optimizer=lambda: make_optimizer(args.teacher_epochs),
            epochs=args.teacher_epochs, quantizer="dorefa", **width)
    student = models.get(args.arch)(info.input_shape, info.num_classes, bits=1, **width)
    options = dict(feature_taps="auto", kl_weight=args.kl_weight,
                   feature_weight=args.feature_weight,
                   temperature=args.temperature)
    fit = dict(validation_data=val, verbose=2)
    with _common.Timer("distillation"):
        if args.arch == "reactnet_resnet18":
            # ReActNet: 1e-5 weight decay while the weights are real (step 1), none after.
            student, _ = distill.reactnet_two_step(
                student, teachers, train, epochs=(args.epochs, args.epochs),
                optimizer=lambda step: make_optimizer(args.epochs, 1e-5 if step == 1 else 0.0),
                metrics=["accuracy"], compile_kwargs=_common.compile_kwargs(args),
                **fit, **options)
        else:
            distiller = distill.MultiTeacherDistiller(student, teachers, **options)
            distiller.compile(make_optimizer(args.epochs), metrics=["accuracy"],
                              **_common.compile_kwargs(args))
            distiller.fit(train, epochs=args.epochs, shuffle=False, **fit)
            student = distiller.student
    return _common.finish(student, args, val)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
