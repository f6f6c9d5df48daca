"""What the device is: the probe run in a child process, git, nvidia-smi."""

from __future__ import annotations

import hashlib
import shutil
import subprocess


from .common import REPO


# ============================================================================ environment

ENV_PROBE = r"""
import json, os, platform, sys
info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count()}
import torch
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            cuda_available=torch.cuda.is_available(),
            device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
            torch_threads=torch.get_num_threads())
try:
    from importlib.metadata import version
    info["torchvision"] = version("torchvision")
except Exception as exc:
    info["torchvision"] = f"unavailable: {exc}"
# the student methods and what each needs, from train_student.py's registry
from utils.distill import METHODS  # python -c in the repository's root: its packages import
info["methods"] = {name: {"teacher": m.teacher, "paraphraser": m.paraphraser} for name, m in METHODS.items()}
device = sys.argv[1]
if info["cuda_available"]:
    info["devices"] = []
    for i in range(info["device_count"]):
        p = torch.cuda.get_device_properties(i)
        info["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                "memory_gib": round(p.total_memory / 2**30, 1),
                                "multiprocessors": p.multi_processor_count})
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        v = torch.cuda.nccl.version()
        info["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as exc:
        info["nccl"] = f"unavailable: {exc}"
if device == "cuda":
    if not info["cuda_available"]:
        print(json.dumps(info))
        raise SystemExit("--device cuda but torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    x = torch.randn(8, 3, 32, 32, device="cuda")
    w = torch.randn(16, 3, 3, 3, device="cuda")
    y = torch.nn.functional.conv2d(x, w, padding=1)
    m = torch.randn(256, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z = m @ m
    torch.cuda.synchronize()
    if not (torch.isfinite(y).all() and torch.isfinite(z.float()).all()):
        raise SystemExit("a convolution / bf16 matmul on the GPU gave non-finite values")
    info["gpu_smoke_test"] = "conv2d (cuDNN), bf16 autocast matmul: finite"
print(json.dumps(info))
"""


def git_info() -> dict:
    info = {}
    try:
        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=20, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20).stdout
        info["modified_tracked_files"] = len(dirty.splitlines())
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown (no git repository here)"
    # The device copy of the tree may have no .git: a digest of the Python sources names it anyway.
    digest = hashlib.sha256()
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in (".venv", "runs", "data", "__pycache__") or "__pycache__" in rel.parts:
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    info["python_sources_sha256"] = digest.hexdigest()[:16]
    return info


def nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


