"""CMT-KD on CIFAR-100: a W2A2 (or W1A2) ResNet-18 trained jointly with 4/6/8-bit teachers.

Collaborative multi-teacher knowledge distillation (Pham, Hoang, Do, WACV 2023,
arXiv:2210.16103; METHODS.md section 1) with `kerasbnn.distill.CollaborativeDistiller`:
HWGQ-quantized teachers of the student's architecture share knowledge at every stage output,
F^l = sum_i softmax(pi^l)_i F_i^l, which feeds every teacher's next stage; the student, the
teachers and the importance factors pi are trained end to end from

    L = alpha (CE^s + CE^t) + beta (KL^s + KL^t) + gamma sum_l AT(F^l, A_s^l)

with the KDCL-MinLogit ensemble as the mutual-learning target.

Paper settings (the defaults): SGD momentum 0.9, batch 256, 120 epochs, lr 0.1 /10 at epochs
50 and 100, weight decay 25e-6 (1-2-bit nets), alpha = 1, beta = 0.5, gamma = 100 (attention
loss), T = 4, pi at 0.1 x the network's learning rate; first and last layers float.
T, the pi learning rate and gamma come from a third-party transcription (UNCONFIRMED).

    .venv/bin/python examples/cmtkd_cifar100.py                       # W2A2 <- 4/6/8-bit
    .venv/bin/python examples/cmtkd_cifar100.py --student-bits 1 2 --teacher-bits 2 4 8
    .venv/bin/python examples/cmtkd_cifar100.py --smoke               # seconds, Fashion-MNIST
"""

import sys

import _common

from kerasbnn import distill

PAPER_EPOCHS = 120
BOUNDARIES = (50, 100)


def parse(argv):
    p = _common.parser(__doc__.splitlines()[0], epochs=PAPER_EPOCHS, batch_size=256,
                       learning_rate=0.1, weight_decay=25e-6, out="runs/cmtkd_cifar100")
    p.add_argument("--dataset", choices=("cifar100", "cifar10"), default="cifar100")
    p.add_argument("--student-bits", type=int, nargs="+", default=[2],
                   help="k (WkAk) or two values w a (e.g. 1 2 for W1A2)")
    p.add_argument("--teacher-bits", type=int, nargs="+", default=[4, 6, 8])
    p.add_argument("--quantizer", choices=("hwgq", "lsq"), default="hwgq")
    p.add_argument("--feature-loss", choices=("attention", "fitnet", "none"), default="attention")
    p.add_argument("--ce-weight", type=float, default=1.0, help="eq 10's alpha")
    p.add_argument("--kl-weight", type=float, default=0.5, help="eq 10's beta")
    p.add_argument("--feature-weight", type=float, default=None,
                   help="weight of the feature loss (default: 100 attention, 1 FitNet)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--pi-lr-scale", type=float, default=0.1,
                   help="learning rate of the importance factors relative to the network")
    args = p.parse_args(argv)
    if len(args.student_bits) not in (1, 2):
        raise ValueError(f"--student-bits takes one or two values, received {args.student_bits}.")
    _common.check_args(args)
    return _common.apply_smoke(args)


def main(argv=None):
    args = parse(argv)
    _common.setup(args)
    train, val, info = _common.load_data(args, args.dataset)
    steps = _common.steps_per_epoch(train)
    student_bits = args.student_bits[0] if len(args.student_bits) == 1 else tuple(args.student_bits)
    builder = dict(stem="cifar")
    if args.smoke:
        builder["width_multiplier"] = _common.SMOKE_WIDTH
    distiller = distill.CollaborativeDistiller.from_zoo(
        "resnet18", info.input_shape, info.num_classes, student_bits=student_bits,
        teacher_bits=tuple(args.teacher_bits), quantizer=args.quantizer, builder_kwargs=builder,
        feature_loss=None if args.feature_loss == "none" else args.feature_loss,
        ce_weight=args.ce_weight, kl_weight=args.kl_weight, feature_weight=args.feature_weight,
        temperature=args.temperature, fusion_lr_scale=args.pi_lr_scale)
    boundaries = _common.scaled_boundaries(BOUNDARIES, PAPER_EPOCHS, args.epochs)
    optimizer = _common.optimizer(
        "sgd", _common.step_schedule(args.lr, boundaries, steps), args.weight_decay)
    distiller.compile(optimizer, metrics=["accuracy"], **_common.compile_kwargs(args))
    with _common.Timer("collaborative training"):
        history = distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=2,
                                shuffle=False,
                                callbacks=[distill.DeltaHistory(f"{args.out}/pi_history.csv")])
    print(f"[combined teacher] val top-1 {history.history['val_teacher_accuracy'][-1]:.4f}")
    for key, pi in distiller.importances().items():
        print(f"[pi] {key}: " + " ".join(
            f"{bits}-bit {p:.3f}" for bits, p in zip(args.teacher_bits, pi)))
    return _common.finish(distiller.student, args, val)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
