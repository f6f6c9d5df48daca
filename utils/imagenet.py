"""ImageNet (ILSVRC-2012) for Table 6: JPEGs decoded and augmented per image in DataLoader workers.

CIFAR lives on the device as one uint8 tensor (utils.data); ImageNet's 1.28M JPEGs of
varied sizes neither fit there nor share a shape, so here each image is decoded and
augmented on its own in worker processes, the standard recipe (the paper's appendix):
train RandomResizedCrop(224) + horizontal flip, evaluation Resize(256) + CenterCrop(224),
both normalized with ImageNet's mean and std.

Layout: ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (the validation images
sorted into class folders); class indices follow train/'s sorted folder names.

Batches are a function of (seed, iteration) only, as for CIFAR:
- epoch e's order is a DistributedSampler permutation seeded with (seed, e); under
  torchrun rank r takes every world-th image of it, so the images of one global batch
  are the same whatever the number of processes;
- the augmentation of the image at global position p of epoch e is drawn from a
  generator seeded with (seed, e, p), not from a worker's running random state: the
  same crop and flip whatever the number of workers, and after a resume;
- resuming at iteration i starts the epoch's sampler at i's position: the images
  before it are never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP, RESIZE = 224, 256


def train_transform():
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(CROP), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_workers() -> int:
    """Decoding workers per process: the CPU cores shared by the processes of this node."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(16, (os.cpu_count() or 1) // per_node))


def augment_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of one image's augmentation: a function of (seed, epoch, position in the epoch)."""
    return (((seed * 1_000_003 + epoch) << 32) + position) & (2 ** 63 - 1)


class _Images(Dataset):
    """(path, label) samples -> (transformed image, label).

    An item is an index (evaluation: no randomness) or (index, epoch, position), whose
    random augmentation is drawn from a generator seeded by `augment_seed`.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable, seed: int = 0):
        # Two numpy arrays, not 1.28M Python tuples: workers reading a list of objects
        # touch their reference counts and copy the forked pages, per worker and per rank.
        self.paths = np.array([os.fsencode(path) for path, _ in samples])
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.transform, self.seed = transform, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        index, randomness = (item, None) if isinstance(item, int) else (item[0], item[1:])
        label = int(self.labels[index])
        image = _open_image(os.fsdecode(self.paths[index]))
        if randomness is None:
            return self.transform(image), label
        # torchvision's transforms draw from torch's global CPU generator: seed it for this
        # image only, leaving the process's own random state as it was.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(augment_seed(self.seed, *randomness))
            return self.transform(image), label


def _open_image(path: str):
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as exc:
        raise UserError(f"cannot read image {path} ({type(exc).__name__}: {exc}); remove or "
                        f"replace the file") from None


class _EpochSampler(DistributedSampler):
    """DistributedSampler (drop_last) that starts `skip` images into this rank's share of
    the epoch and yields (index, epoch, global position) for `_Images`."""

    def __init__(self, n: int, world: int, rank: int, seed: int):
        # Permutation seed seed * 1_000_003 + epoch, as utils.data.epoch_permutation.
        super().__init__(range(n), num_replicas=world, rank=rank, shuffle=True,
                         seed=seed * 1_000_003, drop_last=True)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())  # this rank's share: every world-th of the permutation
        for p in range(self.skip, len(indices)):
            yield indices[p], self.epoch, p * self.num_replicas + self.rank

    def __len__(self) -> int:
        return self.num_samples - self.skip


@dataclass
class ImageNetData:
    """ImageNet as file lists; `batches` feeds utils.train.fit, `val_batches` its evaluation."""

    root: Path
    classes: list[str] = field(repr=False)
    train_samples: list[tuple[str, int]] = field(repr=False)  # (path, label)
    val_samples: list[tuple[str, int]] = field(repr=False)
    device: torch.device
    workers: int
    name: str = "imagenet"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """Height and width of the images the networks are given: the crop."""
        return CROP, CROP

    def to(self, device: torch.device | str) -> "ImageNetData":
        return replace(self, device=torch.device(device))

    def steps_per_epoch(self, batch_size: int) -> int:
        """Iterations per epoch at global batch `batch_size` (the last partial batch dropped)."""
        return len(self.train_samples) // batch_size

    def _loader(self, dataset: Dataset, batch_size: int, sampler, seed: int, persistent: bool,
                drop_last: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda", drop_last=drop_last,
                          persistent_workers=persistent and self.workers > 0,
                          # a generator of its own: creating an iterator leaves torch's global
                          # random state (saved in checkpoints) untouched
                          generator=torch.Generator().manual_seed(seed))

    def batches(self, batch_size: int, seed: int, augment: bool = True
                ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """`iteration -> (x, y)` on `device`: this process's share of the global batch
        `batch_size` (all of it in one process, batch_size // world under torchrun).

        Called with increasing iterations from any start (a resume); a jump or a new epoch
        restarts the loader at the iteration's position without reading the images before it.
        """
        rank, world = rank_and_world()
        if batch_size % world:
            raise UserError(f"--batch-size {batch_size} does not split evenly over {world} "
                            f"processes; use a multiple of {world}")
        steps = self.steps_per_epoch(batch_size)
        if steps == 0:
            raise UserError(f"--batch-size {batch_size} is larger than the training set "
                            f"({len(self.train_samples)} images)")
        local = batch_size // world
        dataset = _Images(self.train_samples, train_transform() if augment else eval_transform(), seed)
        sampler = _EpochSampler(len(dataset), world, rank, seed)
        loader = self._loader(dataset, local, sampler, seed, persistent=True, drop_last=True)
        state = {"next": None, "batches": None}  # the iteration `batches` yields next

        def next_batch(iteration: int):
            if iteration != state["next"]:
                epoch, position = divmod(iteration, steps)
                sampler.set_epoch(epoch)
                sampler.skip = position * local
                state["batches"] = iter(loader)
            x, y = next(state["batches"])
            # The epoch's last step: the next call starts the next epoch's loader.
            state["next"] = iteration + 1 if (iteration + 1) % steps else None
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

        return next_batch

    def val_batches(self, batch_size: int):
        """(x, y) on `device`, normalized and centre-cropped, over this process's shard of
        val/ (disjoint contiguous shards under torchrun; the whole set in one process)."""
        rank, world = rank_and_world()
        n = len(self.val_samples)
        shard = range(n * rank // world, n * (rank + 1) // world)
        loader = self._loader(_Images(self.val_samples, eval_transform()), batch_size, shard, 0,
                              persistent=False, drop_last=False)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------- loading

def load_imagenet(root: str | os.PathLike, train_subset: int | None = None,
                  test_subset: int | None = None, workers: int | None = None,
                  device: torch.device | str = "cpu") -> ImageNetData:
    """Index ROOT/train/<wnid>/* and ROOT/val/<wnid>/* (no image is read here).

    train_subset / test_subset: class-balanced subsets (utils.data.balanced_subset), the
    same images for every seed and method.  workers: decoding processes per training
    process (default: the node's cores over its processes, at most 16).
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    from utils.data import balanced_subset

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"{root / split} does not exist; --data-root must hold ImageNet's "
                            f"train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (validation images sorted "
                            f"into class folders)")
    try:
        classes, class_to_idx = find_classes(str(root / "train"))
    except FileNotFoundError:
        raise UserError(f"{root / 'train'} has no class folders; expected train/<wnid>/*.JPEG") from None
    val_classes = sorted(e.name for e in os.scandir(root / "val") if e.is_dir())
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise UserError(f"{root / 'val'} has classes missing from train/: {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''}")
    splits = {}
    for split, names in (("train", classes), ("val", val_classes)):
        samples = make_dataset(str(root / split), {c: class_to_idx[c] for c in names},
                               extensions=IMG_EXTENSIONS, allow_empty=True) if names else []
        if not samples:
            raise UserError(f"{root / split} has no images; expected {split}/<wnid>/*.JPEG")
        splits[split] = samples
    for split, n, what in (("train", train_subset, "--train-subset"), ("val", test_subset, "--test-subset")):
        if n is not None:
            labels = torch.tensor([label for _, label in splits[split]])
            keep = balanced_subset(labels, n, len(classes), what=what)
            splits[split] = [splits[split][i] for i in keep.tolist()]
    return ImageNetData(root, classes, splits["train"], splits["val"], torch.device(device),
                        default_workers() if workers is None else workers)
