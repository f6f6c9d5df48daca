"""Data: folder and archive loading, subsets, normalization, batches, and their errors."""

import tarfile

import pytest
import torch

from utils.data import BatchSampler, NORM_STATS, balanced_subset, load_data, train_batch
from utils.errors import UserError


def test_folder_loads_labels_in_class_order(tiny_folder):
    data = load_data("folder", tiny_folder)
    assert data.num_classes == 10
    assert data.train_x.shape == (80, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (40, 3, 32, 32)
    assert torch.equal(data.train_y.bincount(), torch.full((10,), 8))
    # folder default: the CIFAR-10 normalization the paper's code uses
    assert torch.allclose(data.mean.flatten(), torch.tensor(NORM_STATS["cifar10"][0]))


def test_archive_equals_directory(tiny_folder, tmp_path):
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="tiny")
    a, b = load_data("folder", tiny_folder), load_data("folder", archive)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)


def test_balanced_subset_is_balanced_and_fixed():
    labels = torch.arange(10).repeat(50)
    idx = balanced_subset(labels, 95, 10)
    counts = labels[idx].bincount()
    assert counts.max() - counts.min() <= 1 and counts.sum() == 95
    assert torch.equal(idx, balanced_subset(labels, 95, 10))  # independent of any run seed
    with pytest.raises(UserError, match="between 1 and 500"):
        balanced_subset(labels, 501, 10)


def test_normalized_batch_statistics(tiny_folder):
    data = load_data("folder", tiny_folder, norm="computed")
    x = data.normalize(data.train_x)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_sampler_covers_each_epoch_once():
    sampler = BatchSampler(100, 10, seed=3, device=torch.device("cpu"))
    epoch = torch.cat([sampler.indices(i) for i in range(10)])
    assert torch.equal(epoch.sort().values, torch.arange(100))
    assert not torch.equal(sampler.indices(10), sampler.indices(0))  # reshuffled next epoch
    fresh = BatchSampler(100, 10, seed=3, device=torch.device("cpu"))
    assert torch.equal(fresh.indices(13), sampler.indices(13))  # a function of (seed, iteration)


def test_train_batch_is_deterministic(tiny_folder):
    data = load_data("folder", tiny_folder)
    sampler = BatchSampler(len(data.train_y), 16, seed=0, device=torch.device("cpu"))
    x1, y1 = train_batch(data, sampler, 5, seed=0)
    x2, y2 = train_batch(data, BatchSampler(len(data.train_y), 16, 0, torch.device("cpu")), 5, seed=0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = train_batch(data, sampler, 5, seed=1)
    assert not torch.equal(x1, x3)


@pytest.mark.parametrize("case", ["missing", "no_test", "unreadable", "not_archive"])
def test_folder_errors_are_clear(tiny_folder, tmp_path, case):
    import shutil

    root = tmp_path / "data"
    if case == "missing":
        match = "does not exist"
    elif case == "no_test":
        shutil.copytree(tiny_folder / "train", root / "train")
        match = "no test/"
    elif case == "unreadable":
        shutil.copytree(tiny_folder, root)
        bad = root / "train" / "class03" / "0002.png"
        bad.write_bytes(b"not an image")
        match = "0002.png"
    else:
        root = tmp_path / "data.tar.gz"
        root.write_bytes(b"garbage")
        match = "tar archive"
    with pytest.raises(UserError, match=match):
        load_data("folder", root)


def test_cifar_offline_error_says_where_to_put_files(tmp_path, monkeypatch):
    import torchvision

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse)
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):
        load_data("cifar10", tmp_path)


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset"):
        load_data("mnist", ".")
