"""ImageNet (Table 6) on tiny generated folders: torchvision ResNet wrappers, the pretrained
teacher's offline error, the DataLoader pipeline's batches (normalized, repeatable, resumable
without decoding skipped images, split over processes), the validation metrics, the table
script's runs and the report's Table 6."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import helpers
import utils.imagenet as imagenet
from models import MODELS, build_model, model_names
from models.features import group_channels
from models.torchvision_resnet import PretrainedWeightsError, load_teacher_spec, load_torchvision_pretrained
from utils import distributed
from utils.errors import UserError
from utils.imagenet import IMAGENET_MEAN, IMAGENET_STD, load_imagenet
from utils.train import classification_metrics

REPO = Path(__file__).resolve().parent.parent
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 7, 3, 2
SIZES = [(40, 50), (64, 48), (90, 70), (50, 40), (33, 61)]  # (width, height)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: on a shared, busy CPU a thread pool only adds waiting (10-30x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- models

@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_torchvision_wrappers(name):
    assert name in MODELS and name in model_names()
    torch.manual_seed(0)
    model = build_model(name, 10).eval()
    assert (model.arch, model.num_classes, group_channels(model)) == (name, 10, [64, 128, 256, 512])
    x = torch.randn(2, 3, 64, 64)
    logits, feats = model(x)
    assert logits.shape == (2, 10)
    # stages at strides 4, 8, 16, 32: the last group is input / 32 (7x7 at 224)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    # torchvision's own network, same weights: same logits, same state_dict keys
    reference = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    reference.load_state_dict(model.state_dict())
    torch.testing.assert_close(reference(x), logits)
    torch.testing.assert_close(model.fc(feats[-1].mean(dim=(2, 3))), logits)


# ----------------------------------------------------------------------------- pretrained teacher

@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """An empty hub cache and no network: torch hub's download fails as offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_teacher_offline_says_where_to_put_the_file(empty_torch_home):
    from utils.checkpoint import load_classifier

    # The network module raises its own exception; the scripts' loader turns it into the
    # one-line UserError the user sees.
    for load in (load_teacher_spec, load_classifier):
        with pytest.raises(UserError if load is load_classifier else PretrainedWeightsError) as err:
            load("torchvision:resnet34")
        message = str(err.value)
        assert "\n" not in message
        assert str(empty_torch_home / "resnet34-b627a593.pth") in message
        assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message
    with pytest.raises(PretrainedWeightsError, match="torchvision:resnet18, torchvision:resnet34"):
        load_torchvision_pretrained("resnet50")
    with pytest.raises(PretrainedWeightsError, match="expected torchvision:NAME"):
        load_teacher_spec("runs/teacher")
    with pytest.raises(UserError, match="torchvision:resnet18, torchvision:resnet34"):
        load_classifier("torchvision:resnet50")


def test_pretrained_teacher_from_the_hub_cache(empty_torch_home):
    torch.manual_seed(0)
    published = torchvision.models.resnet18(weights=None).state_dict()
    empty_torch_home.mkdir(parents=True)
    torch.save(published, empty_torch_home / "resnet18-f37072fd.pth")
    model, info = load_teacher_spec("torchvision:resnet18")
    assert info == {"kind": "teacher", "arch": "resnet18", "num_classes": 1000, "dataset": "imagenet",
                    "source": "torchvision:resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, published[key]), key

    (empty_torch_home / "resnet18-f37072fd.pth").write_bytes(b"truncated")
    with pytest.raises(PretrainedWeightsError, match="delete it"):
        load_torchvision_pretrained("resnet18")


# ----------------------------------------------------------------------------- data

def colour(c: int) -> np.ndarray:
    return np.array([40 + 30 * c, 220 - 25 * c, 60 + 20 * (c % 3)], dtype=float)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    """train/<wnid>/*.JPEG, val/<wnid>/*.JPEG: a class colour plus noise, sizes varied."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                w, h = SIZES[(c + i) % len(SIZES)]
                pixels = colour(c) + rng.normal(0, 20, size=(h, w, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{c}_{i}.JPEG")
    return root


@pytest.fixture(scope="module")
def data(imagenet_root):
    return load_imagenet(imagenet_root, workers=0)


def run_batches(data, iterations, seed=0, augment=True, batch_size=4):
    next_batch = data.batches(batch_size, seed, augment)
    return [next_batch(i) for i in iterations]


def test_loads_the_folder(data, imagenet_root):
    assert (data.name, data.num_classes, data.device) == ("imagenet", CLASSES, torch.device("cpu"))
    assert len(data.train_samples) == CLASSES * TRAIN_PER_CLASS and len(data.val_samples) == CLASSES * VAL_PER_CLASS
    assert data.classes == sorted(data.classes)
    assert data.steps_per_epoch(4) == 5
    small = load_imagenet(imagenet_root, train_subset=CLASSES, test_subset=CLASSES, workers=0)
    assert sorted(label for _, label in small.train_samples) == list(range(CLASSES))
    assert sorted(label for _, label in small.val_samples) == list(range(CLASSES))


def test_batches_are_normalized_crops_with_their_labels(data):
    for augment in (True, False):
        x, y = run_batches(data, [0], augment=augment)[0]
        assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = x * std + mean
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        # each image's mean colour is its class's colour: labels travel with their images
        for image, label in zip(pixels, y.tolist()):
            assert torch.allclose(image.mean(dim=(1, 2)) * 255, torch.tensor(colour(label)).float(), atol=8)


def test_batches_repeat_for_a_seed_and_resume_anywhere(data, monkeypatch):
    steps = data.steps_per_epoch(4)
    sequence = run_batches(data, range(2 * steps + 1), seed=3)
    again = run_batches(data, range(2 * steps + 1), seed=3)
    for (x1, y1), (x2, y2) in zip(sequence, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = run_batches(data, [0], seed=4)[0]
    assert not torch.equal(other[0], sequence[0][0])
    # an epoch's batches are distinct images, the next epoch another order
    assert not torch.equal(sequence[steps][0], sequence[0][0])

    decoded = []
    open_image = imagenet._open_image
    monkeypatch.setattr(imagenet, "_open_image", lambda path: decoded.append(path) or open_image(path))
    for start in (2, steps + 2):  # mid-epoch 0, mid-epoch 1
        decoded.clear()
        resumed = run_batches(data, [start, start + 1, start + 2], seed=3)
        for k, (x, y) in enumerate(resumed):
            assert torch.equal(x, sequence[start + k][0]) and torch.equal(y, sequence[start + k][1])
        assert len(decoded) == 3 * 4  # the skipped images were never read


def test_augmentation_does_not_depend_on_the_workers(imagenet_root, data):
    with_workers = load_imagenet(imagenet_root, workers=2)
    a = run_batches(data, range(3), seed=5)
    b = run_batches(with_workers, range(3), seed=5)
    for (x1, y1), (x2, y2) in zip(a, b):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_processes_split_each_global_batch(data, monkeypatch):
    whole = run_batches(data, range(7), seed=2)  # 5 steps per epoch: crosses an epoch
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(imagenet, "rank_and_world", lambda rank=rank: (rank, 2))
        shares.append(run_batches(data, range(7), seed=2))
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shares):
        assert x0.shape[0] == x1.shape[0] == 2
        # rank r takes every other image of the permutation: the global batch, interleaved
        assert torch.equal(torch.stack([x0, x1], 1).flatten(0, 1), x)
        assert torch.equal(torch.stack([y0, y1], 1).flatten(0, 1), y)
    with pytest.raises(UserError, match="split evenly"):
        data.batches(5, 0, True)


def test_batch_errors(data):
    with pytest.raises(UserError, match="larger than the training set"):
        data.batches(64, 0, True)


class FixedLogits(nn.Module):
    """Ranks class 0 first, then 1, ..., whatever the image."""

    def __init__(self):
        super().__init__()
        self.logits = torch.arange(CLASSES, 0, -1, dtype=torch.float32)

    def forward(self, x):
        return self.logits.expand(len(x), -1), []


def test_evaluation_top1_top5_and_loss(data, monkeypatch):
    model = FixedLogits().train()
    metrics = classification_metrics(model, data, batch_size=3)
    assert model.training  # its mode is given back
    # every class has VAL_PER_CLASS images; only class 0 is top-1, classes 0..4 are top-5
    per_class_loss = torch.logsumexp(model.logits, 0) - model.logits
    assert metrics["test_error"] == pytest.approx(100 * (CLASSES - 1) / CLASSES)
    assert metrics["test_error_top5"] == pytest.approx(100 * (CLASSES - 5) / CLASSES)
    assert metrics["test_loss"] == pytest.approx(per_class_loss.mean().item(), rel=1e-6)

    # two processes: disjoint shards whose all-reduced sums are the whole set's
    reduced = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: reduced.append(t.clone()))
    monkeypatch.setattr(distributed, "active", lambda: True)
    for rank in (0, 1):
        monkeypatch.setattr(imagenet, "rank_and_world", lambda rank=rank: (rank, 2))
        classification_metrics(model, data, batch_size=3)
    total = reduced[0] + reduced[1]
    n = CLASSES * VAL_PER_CLASS
    assert reduced[0][3] == n // 2 and total[3] == n
    assert total[0].item() == pytest.approx(metrics["test_error"] * n / 100)
    assert total[1].item() == pytest.approx(metrics["test_error_top5"] * n / 100)
    assert total[2].item() == pytest.approx(metrics["test_loss"] * n, rel=1e-6)


TWO_PROCESSES = """
import sys, torch, torch.distributed as dist
from utils.imagenet import load_imagenet
from utils.train import classification_metrics
torch.set_num_threads(1)
dist.init_process_group("gloo")
data = load_imagenet(sys.argv[1], workers=0)
next_batch = data.batches(4, seed=2)
batches = [next_batch(i) for i in range(6)]
model = torch.nn.Module()
model.forward = lambda x: (torch.arange(7.0, 0, -1).expand(len(x), -1), [])
torch.save({"batches": batches, "metrics": classification_metrics(model, data, 3)},
           f"{sys.argv[2]}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_under_torchrun(tmp_path, imagenet_root, data):
    """Two real gloo processes: each gets its half of every global batch, and the
    all-reduced evaluation of the whole set."""
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESSES)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # the repository's packages
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(script), str(imagenet_root), str(tmp_path)],
                   check=True, capture_output=True, timeout=300, env=env)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    whole = run_batches(data, range(6), seed=2)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, ranks[0]["batches"], ranks[1]["batches"]):
        assert torch.equal(torch.stack([x0, x1], 1).flatten(0, 1), x)
        assert torch.equal(torch.stack([y0, y1], 1).flatten(0, 1), y)
    expected = classification_metrics(FixedLogits(), data, 3)
    for rank in ranks:
        assert rank["metrics"] == pytest.approx(expected)


def test_folder_errors(tmp_path, imagenet_root):
    with pytest.raises(UserError, match=str(tmp_path / "none" / "train")):
        load_imagenet(tmp_path / "none")
    (tmp_path / "empty" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "n01").mkdir(parents=True)
    with pytest.raises(UserError, match=f"{tmp_path / 'empty' / 'train'} has no images"):
        load_imagenet(tmp_path / "empty")
    (tmp_path / "novals" / "val").mkdir(parents=True)
    os.symlink(imagenet_root / "train", tmp_path / "novals" / "train")
    with pytest.raises(UserError, match=f"{tmp_path / 'novals' / 'val'} has no images"):
        load_imagenet(tmp_path / "novals")
    (tmp_path / "novals" / "val" / "n99999999").mkdir()
    with pytest.raises(UserError, match="classes missing from train/: n99999999"):
        load_imagenet(tmp_path / "novals")


# ----------------------------------------------------------------------------- table script

def dry_run(**settings) -> dict[str, list[str]]:
    """scripts/table6.sh's command lines by run folder name."""
    return {Path(w[w.index("--out") + 1]).name: w for w in helpers.dry_run("table6", timeout=60, **settings)}


def flag(words: list[str], name: str, n: int = 1) -> list[str] | str:
    i = words.index(name)
    return words[i + 1] if n == 1 else words[i + 1:i + 1 + n]


def test_table6_dry_run_lists_the_papers_runs(tmp_path):
    runs = dry_run(RUNS=tmp_path, IMAGENET_ROOT="/data/imagenet")
    t, p = tmp_path / "imagenet" / "teacher-resnet34-s0", tmp_path / "imagenet" / "para-resnet34-k0.5-s0"
    assert sorted(runs) == sorted(["teacher-resnet34-s0", "para-resnet34-k0.5-s0", "ce-resnet18-s0",
                                   "kd-resnet18-from-resnet34-s0", "at-resnet18-from-resnet34-s0",
                                   "ft-resnet18-from-resnet34-k0.5-s0"])
    for name, words in runs.items():
        assert words[:4] == ["torchrun", "--standalone", "--nproc-per-node", "1"]
        assert flag(words, "--dataset") == "imagenet" and flag(words, "--data-root") == "/data/imagenet"
        assert (flag(words, "--batch-size"), flag(words, "--lr"), flag(words, "--wd")) == ("256", "0.1", "1e-4")
        assert flag(words, "--eval-every") == "5004"  # one epoch of ImageNet-1k
        if not name.startswith("para"):
            assert flag(words, "--iters") == "450360"  # 90 epochs x 5004
            assert flag(words, "--milestones", 2) == ["150120", "300240"]  # epochs 30 and 60
    assert runs["teacher-resnet34-s0"][4] == "train_teacher.py" and flag(runs["teacher-resnet34-s0"], "--arch") == "resnet34"
    para = runs["para-resnet34-k0.5-s0"]
    assert (flag(para, "--teacher"), flag(para, "--k"), flag(para, "--epochs")) == (str(t), "0.5", "1")
    assert "--no-bn" in para
    assert "--teacher" not in runs["ce-resnet18-s0"]
    assert flag(runs["kd-resnet18-from-resnet34-s0"], "--method") == "kd"
    assert flag(runs["at-resnet18-from-resnet34-s0"], "--at-beta") == "1000"
    ft = runs["ft-resnet18-from-resnet34-k0.5-s0"]
    assert (flag(ft, "--arch"), flag(ft, "--teacher"), flag(ft, "--paraphraser"), flag(ft, "--beta")) == \
        ("resnet18", str(t), str(p), "1000")


def test_table6_pretrained_teacher_gpus_and_subsets(tmp_path):
    runs = dry_run(RUNS=tmp_path, PRETRAINED_TEACHER=1, GPUS="0 1", SEEDS=2, TRAIN_SUBSET=2560, EPOCHS=3)
    assert len(runs) == 2 * 5 and not any(name.startswith("teacher") for name in runs)
    for name, words in runs.items():
        assert flag(words, "--nproc-per-node") == "2" and flag(words, "--train-subset") == "2560"
        if name.startswith(("kd", "at", "ft", "para")):
            assert flag(words, "--teacher") == "torchvision:resnet34"
        if not name.startswith("para"):
            assert flag(words, "--iters") == "30" and flag(words, "--milestones", 2) == ["10", "20"]
    assert flag(runs["ft-resnet18-from-tv_resnet34-k0.5-s1"], "--paraphraser").endswith("para-tv_resnet34-k0.5-s1")


def test_table6_slurm_multi_node_rendezvous(tmp_path):
    """Jobs wrap `srun torchrun` with a c10d rendezvous that the job expands on its first node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SBATCH_LOG.$$"\necho $$\n')
    (bin_dir / "srun").write_text('#!/bin/bash\necho "$@"\n')
    (bin_dir / "scontrol").write_text('#!/bin/bash\nprintf "node-a\\nnode-b\\n"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "sbatch"
    proc = helpers.run_script("table6", timeout=60, RUNS=tmp_path / "runs", LAUNCHER="slurm", NNODES=2, NPROC=8,
                              SBATCH=bin_dir / "sbatch", SBATCH_LOG=log, ONLY="teacher")
    assert "submitted 1 jobs" in proc.stderr
    args = next(tmp_path.glob("sbatch.*")).read_text().splitlines()
    assert {"--nodes=2", "--ntasks-per-node=1", "--gres=gpu:8"} <= set(args)
    wrap = args[args.index("--wrap") + 1]
    job = subprocess.run(["sh", "-c", wrap], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "77",
                              "SLURM_JOB_NODELIST": "node-[a-b]"})
    words = job.stdout.split()
    assert words[:5] == ["torchrun", "--nnodes", "2", "--nproc-per-node", "8"]
    assert flag(words, "--rdzv-endpoint") == "node-a:29500" and flag(words, "--rdzv-id") == "77"
    assert "train_teacher.py" in words


# ----------------------------------------------------------------------------- report

def load_report():
    import report

    return report


def write_run(path: Path, kind: str, args: dict, error: float, top5: float, record: dict) -> Path:
    path.mkdir(parents=True)
    args = {"dataset": "imagenet", "seed": 0, "iters": 450360, "lr": 0.1, "wd": 1e-4, "batch_size": 256,
            "out": str(path), **args}
    record = {"stage": kind, "dataset": "imagenet", "recipe": "paper", "iters": args["iters"], "seed": 0, **record}
    (path / "args.json").write_text(json.dumps({"args": args, "run": record}))
    (path / "final.json").write_text(json.dumps({
        "test_error_last": error, "test_error_best": error, "best_iter": args["iters"], "kind": kind,
        "last": {"test_error": error, "test_error_top5": top5}, "run": record}))
    return path


def test_report_table6(tmp_path):
    report = load_report()
    root = tmp_path / "runs"
    spec = "torchvision:resnet34"  # the pretrained teacher: no run folder
    # what the later stages record of it (utils.checkpoint.teacher_identity)
    teacher = {"arch": "resnet34", "iters": None, "seed": None, "recipe": "paper", "fingerprint": "0123456789abcdef"}
    shape = {"kind": "conv", "k": 0.5, "layers": 3, "bn": False, "group": -1}
    para = write_run(root / "para", "paraphraser", {"teacher": spec, **shape, "recon_loss": "l1", "iters": 5004},
                     0.1, 0.1, {**shape, "iters": 5004, "teacher": teacher})
    paraphraser = {**shape, "iters": 5004, "seed": 0, "fingerprint": "fedcba9876543210"}
    for method, error, top5 in (("ce", 30.5, 11.0), ("kd", 33.0, 12.0), ("at", 30.0, 10.5), ("ft", 29.0, 10.0)):
        write_run(root / method, "student", {"method": method, "arch": "resnet18", "p": 1,
                                             "teacher": None if method == "ce" else spec,
                                             "paraphraser": [str(para)] if method == "ft" else None},
                  error, top5, {"method": method, "arch": "resnet18", "teacher": None if method == "ce" else teacher,
                                "paraphrasers": [paraphraser] if method == "ft" else []})
    args = report.get_args_parser().parse_args([str(root), "--table", "6"])
    text = next(iter(report.report(args).values()))
    assert "Table 6 — ImageNet" in text and "not placed" not in text
    lines = text.splitlines()
    top1 = next(i for i, line in enumerate(lines) if line.startswith("| ResNet-18 | ResNet-34 | top-1 |"))
    top5 = next(i for i, line in enumerate(lines) if line.startswith("| ResNet-18 | ResNet-34 | top-5 |"))

    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")][4:]

    assert cells(lines[top1]) == ["30.50 (n=1)", "33.00 (n=1)", "30.00 (n=1)", "29.00 (n=1)", "—"]
    assert cells(lines[top1 + 1]) == ["29.91", "33.83", "29.36", "28.57", "26.73"]
    assert cells(lines[top5]) == ["11.00 (n=1)", "12.00 (n=1)", "10.50 (n=1)", "10.00 (n=1)", "—"]
    assert cells(lines[top5 + 1]) == ["10.68", "12.55", "10.23", "9.71", "8.57"]
    assert math.isclose(float(cells(lines[top1 + 2])[3]), 29.0 - 28.57, abs_tol=0.006)
