"""Shared test fixtures: tiny generated image folders and the shared CIFAR-10 copy; and,
for scripts/gpu_check.sh, each test's outcome written as it ends (FT_TEST_LOG)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CIFAR_TAR = SHARED / "data" / "cifar10-jpeg.tar.gz"
FIXTURES = SHARED / "fixtures"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # scripts/test.sh runs the suite in pytest-xdist workers (-n 2 by default): one thread
    # each, in the worker and in the scripts it starts, so that the workers share the cores
    # instead of oversubscribing them (two 2-thread workers on 2 cores ran 2.3x slower).
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Decoded-image caches go to a temporary folder, never next to the data; except for a
    data set given by FT_TEST_DATA, which the caller has decoded into its FT_CACHE_DIR."""
    if not (os.environ.get("FT_TEST_DATA") and os.environ.get("FT_CACHE_DIR")):
        os.environ["FT_CACHE_DIR"] = str(tmp_path_factory.mktemp("ft_cache"))


def pytest_runtest_logreport(report):
    """With FT_TEST_LOG=FILE, append each test's outcome to FILE as a JSON line as soon as it
    is known, so that a run stopped by a time budget (scripts/gpu_check.sh) still says what
    passed.  A failure in set-up or tear-down is the test's outcome too."""
    path = os.environ.get("FT_TEST_LOG")
    if not path or not (report.when == "call" or report.outcome != "passed"):
        return
    line = {"test": report.nodeid, "when": report.when, "outcome": report.outcome,
            "seconds": round(report.duration, 2)}
    if report.outcome != "passed":
        line["detail"] = str(report.longrepr)[-1500:]
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def make_image_folder(root: Path, classes: int = 10, train: int = 8, test: int = 4, size: int = 32,
                      seed: int = 0) -> Path:
    """A learnable toy dataset: each class has its own mean colour plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(classes, 3))
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = colours[c] + rng.normal(0, 25, size=(size, size, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    if not CIFAR_TAR.exists():
        pytest.skip(f"the shared CIFAR-10 copy is absent ({CIFAR_TAR}); real-data tests need ../shared")
    return CIFAR_TAR


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "official_paraphraser_resnet56_k0.5.pth").exists():
        pytest.skip(f"the authors' fixtures are absent ({FIXTURES}); these tests need ../shared")
    return FIXTURES


@pytest.fixture
def tiny_args(tiny_folder):
    """Command-line arguments for a few-iteration run on the tiny folder."""
    def make(out: Path, *extra: str) -> list[str]:
        return ["--dataset", "folder", "--data-root", str(tiny_folder), "--out", str(out),
                "--iters", "4", "--eval-every", "2", "--batch-size", "16", "--progress", "off", *extra]
    return make
