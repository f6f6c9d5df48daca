"""Loading the frozen parts of a later stage from earlier run folders.

`--teacher` and `--paraphraser` take a run folder or a checkpoint file.  A
checkpoint carries what rebuilds its modules (architecture, class count, dataset,
paraphraser configuration) so no other file is needed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from models import build_model
from paraphraser import Paraphraser
from utils.errors import UserError, note
from utils.run import CHECKPOINT, FINAL


def read_checkpoint(path: str | Path, what: str, kinds: tuple[str, ...]) -> dict:
    """Load a stage checkpoint, checking it is one of `kinds` and that its run finished."""
    path = Path(path)
    file = path / CHECKPOINT if path.is_dir() else path
    if not file.exists():
        raise UserError(f"--{what} {path}: no checkpoint there; train it first or give the run "
                        f"folder (holding {CHECKPOINT})")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False)
    except Exception:
        raise UserError(f"--{what} {file} is not a readable checkpoint (truncated or not a torch "
                        f"file); re-train it or point to another") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in kinds:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"--{what} {file} is a {found or 'foreign'} checkpoint, expected "
                        f"{' or '.join(kinds)} (a run folder of train_{kinds[0]}.py)")
    if path.is_dir() and not (path / FINAL).exists():
        raise UserError(f"--{what} {path} has not finished (iteration {ckpt['iteration']} of "
                        f"{ckpt['args']['iters']}); finish it by re-running its command, or pass "
                        f"{file} to use it as it is")
    return ckpt


def fingerprint(module: nn.Module) -> str:
    """A short hash of a module's weights: ties a paraphraser to its teacher."""
    h = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode: a frozen teacher or paraphraser never changes."""
    module.requires_grad_(False)
    return module.eval()


def load_classifier(path: str | Path, what: str = "teacher") -> tuple[nn.Module, dict]:
    """A trained classifier (teacher or student run), frozen, and its checkpoint.

    `torchvision:NAME` (e.g. torchvision:resnet34) takes torchvision's ImageNet weights.
    """
    from models.torchvision_resnet import PretrainedWeightsError, is_teacher_spec, load_teacher_spec

    if is_teacher_spec(str(path)):
        try:
            return load_teacher_spec(str(path))
        except PretrainedWeightsError as exc:
            raise UserError(str(exc)) from None
    ckpt = read_checkpoint(path, what, ("teacher", "student"))
    try:
        model = build_model(ckpt["arch"], ckpt["num_classes"])
        model.load_state_dict(ckpt["modules"]["model"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UserError(f"--{what} {path}: its weights do not fit its recorded network "
                        f"({type(exc).__name__}); the checkpoint is damaged, re-train it") from None
    return freeze(model), ckpt


def load_paraphraser(path: str | Path) -> tuple[Paraphraser, dict]:
    ckpt = read_checkpoint(path, "paraphraser", ("paraphraser",))
    try:
        model = Paraphraser(**ckpt["paraphraser_config"])
        model.load_state_dict(ckpt["modules"]["paraphraser"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UserError(f"--paraphraser {path}: its weights do not fit its recorded configuration "
                        f"({type(exc).__name__}); the checkpoint is damaged, re-train it") from None
    return freeze(model), ckpt


def teacher_identity(model: nn.Module, ckpt: dict) -> dict:
    """What a teacher run is, for a student's or paraphraser's record (final.json "run"):
    its network, schedule, data, the fingerprint of its weights, the source of published
    weights (torchvision:NAME, else None) and the arguments it was trained with."""
    args = ckpt.get("args") or {}
    return {"arch": ckpt.get("arch"), "iters": args.get("iters"), "seed": args.get("seed"),
            "recipe": args.get("recipe", "paper"), "fingerprint": fingerprint(model),
            "dataset": ckpt.get("dataset"), "source": ckpt.get("source"), "args": args}


def paraphraser_identity(model: nn.Module, ckpt: dict) -> dict:
    """What a paraphraser run is, for a student's record (final.json "run")."""
    args, config = ckpt.get("args") or {}, ckpt["paraphraser_config"]
    return {"kind": config["kind"], "k": config["k"], "layers": config["layers"], "bn": config["bn"],
            "group": ckpt.get("group"), "iters": args.get("iters"), "seed": args.get("seed"),
            "fingerprint": fingerprint(model), "args": args}


def check_same_data(ckpt: dict, what: str, dataset: str, other_copy: bool = False) -> None:
    """A teacher (or paraphraser) trained on other data cannot teach this student, unless the
    user says the two are copies of the same images (`other_copy`, --teacher-data-copy)."""
    if ckpt["dataset"] == dataset:
        return
    if other_copy:
        note(f"--{what} was trained on --dataset {ckpt['dataset']}, this run uses {dataset} "
             f"(--teacher-data-copy)")
        return
    raise UserError(f"--{what} was trained on {ckpt['dataset']} but this run uses --dataset "
                    f"{dataset}; pass a {what} trained on {dataset}, or --teacher-data-copy if the "
                    f"two are copies of the same images (e.g. the CIFAR-10 JPEG folder and torchvision's)")
