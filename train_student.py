"""Stage 3: train a student, alone or with knowledge transfer from a frozen teacher.

    python train_student.py --method ft --arch resnet20 --teacher runs/c10/teacher-resnet56-s0 \
        --paraphraser runs/c10/para-resnet56-k0.5-s0 --beta 500 --out runs/c10/ft-resnet20-s0
    python train_student.py --method ce --arch resnet20 --out runs/c10/ce-resnet20-s0
"""

import argparse
import json

import torch

from models import build_model, check_model_name
from translator import Translator
from utils.checkpoint import check_same_data, fingerprint, load_classifier, load_paraphraser
from utils.cli import add_data_args, add_run_args, add_schedule_args, check_positive, check_schedule, run_main
from utils.errors import UserError
from utils.methods import Classification, FactorTransfer
from utils.train import Stage, classification_metrics, fit, load_training_data, open_run, resolve_device

# method -> (needs a teacher, needs a paraphraser)
METHODS = {
    "ce": (False, False),
    "ft": (True, True),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer, stage 3: train a student network, alone (ce) or with "
                    "Factor Transfer (ft) from a frozen teacher and its paraphraser.")
    parser.add_argument("--method", default="ft", choices=tuple(METHODS),
                        help="ce: the student alone; ft: Factor Transfer (default: ft)")
    parser.add_argument("--arch", default="resnet20",
                        help="student network (models.MODELS or wrn_D_W) (default: resnet20)")
    parser.add_argument("--teacher", help="teacher run folder or checkpoint (methods that transfer)")
    parser.add_argument("--paraphraser", help="paraphraser run folder or checkpoint (ft)")
    g = parser.add_argument_group("Factor Transfer")
    g.add_argument("--beta", type=float, default=500.0,
                   help="beta, weight of L_FT against cross-entropy (paper, CIFAR: 500) (default: 500)")
    g.add_argument("--p", type=int, default=1, choices=(1, 2),
                   help="p of L_FT = mean |F_T/||F_T|| - F_S/||F_S|| |^p (default: 1)")
    g.add_argument("--translator-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm in the translator (default: as the paraphraser)")
    add_data_args(parser)
    add_schedule_args(parser, iters=64000)
    add_run_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    check_schedule(args)
    check_positive(args, "beta")
    try:
        check_model_name(args.arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    needs_teacher, needs_paraphraser = METHODS[args.method]
    if needs_teacher and not args.teacher:
        raise UserError(f"--method {args.method} needs --teacher RUN_DIR")
    if needs_paraphraser and not args.paraphraser:
        raise UserError(f"--method {args.method} needs --paraphraser RUN_DIR (train_paraphraser.py)")


def load_frozen(args: argparse.Namespace):
    """Teacher and paraphraser, checked to belong together and to this dataset."""
    teacher = paraphraser = para_ckpt = None
    needs_teacher, needs_paraphraser = METHODS[args.method]
    if needs_teacher:
        teacher, teacher_ckpt = load_classifier(args.teacher)
        check_same_data(teacher_ckpt, "teacher", args.dataset)
    if needs_paraphraser:
        paraphraser, para_ckpt = load_paraphraser(args.paraphraser)
        check_same_data(para_ckpt, "paraphraser", args.dataset)
        if para_ckpt["teacher"]["fingerprint"] != fingerprint(teacher):
            raise UserError(f"--paraphraser {args.paraphraser} was trained on another teacher "
                            f"({para_ckpt['teacher']['arch']}, weights differ from --teacher "
                            f"{args.teacher}); train a paraphraser for this teacher")
    return teacher, paraphraser, para_ckpt


def main(args: argparse.Namespace) -> None:
    check_args(args)
    teacher, paraphraser, para_ckpt = load_frozen(args)
    device = resolve_device(args.device)

    # ---------------------------------------------------------------- run folder
    run = open_run(args)
    if run is None:
        return

    # ---------------------------------------------------------------- data
    data = load_training_data(args, device)
    if teacher is not None and teacher.num_classes != data.num_classes:
        raise UserError(f"--teacher has {teacher.num_classes} classes, the data {data.num_classes}; "
                        f"pass a teacher trained on this dataset")

    # ---------------------------------------------------------------- networks
    torch.manual_seed(args.seed)
    student = build_model(args.arch, data.num_classes).to(device)
    trainable = {"model": student}
    info = {"arch": args.arch, "num_classes": data.num_classes, "dataset": args.dataset,
            "method": args.method}
    if args.method == "ce":
        task = Classification(student)
    else:
        group = para_ckpt["group"]
        bn = para_ckpt["paraphraser_config"]["bn"] if args.translator_bn is None else args.translator_bn
        translator = Translator(student.group_channels[group], paraphraser.factor_channels, bn=bn,
                                layers=paraphraser.config["layers"], kind=paraphraser.config["kind"])
        check_factor_shapes(student, translator, teacher, paraphraser, group, data)
        task = FactorTransfer(student, translator.to(device), teacher.to(device), paraphraser.to(device),
                              beta=args.beta, p=args.p, group=group)
        trainable["translator"] = translator
        info["translator_config"] = translator.config

    # ---------------------------------------------------------------- train
    stage = Stage(
        kind="student", task=task, trainable=trainable, primary="test_error", info=info,
        evaluate=lambda: classification_metrics(student, data, args.eval_batch_size, args.amp,
                                                args.channels_last),
    )
    result = fit(stage, data, run, args)
    run.close()
    print(json.dumps(result, indent=2, sort_keys=True))


@torch.no_grad()
def check_factor_shapes(student, translator, teacher, paraphraser, group, data) -> None:
    """One image through both sides: the two factors must have the same shape."""
    x = data.normalize(data.test_x[:1]).cpu()
    modes = [m.training for m in (student, translator)]
    student.eval(), translator.eval()
    f_s = translator.cpu()(student.cpu()(x)[1][group])
    f_t = paraphraser.cpu().encode(teacher.cpu()(x)[1][group])
    student.train(modes[0]), translator.train(modes[1])
    student.to(data.test_x.device)
    if f_s.shape != f_t.shape:
        raise UserError(f"student factor {tuple(f_s.shape[1:])} cannot match teacher factor "
                        f"{tuple(f_t.shape[1:])}: the student's group output and the teacher's must "
                        f"have the same height and width")


if __name__ == "__main__":
    run_main(main, get_args_parser())
