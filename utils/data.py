"""CIFAR data held on the training device as uint8, augmented in batches.

The paper's CIFAR recipe (its appendix): random 32x32 crop of the image
zero-padded by 4 pixels, horizontal flip with probability 1/2, per-channel
normalization.  Instead of decoding and augmenting each image through PIL in
DataLoader workers, the whole dataset lives on the device as one uint8 tensor and
a batch is augmented with tensor ops (as in airbench): same distribution, no
per-image Python on the hot path.

Sources:
- `cifar10` / `cifar100`: torchvision's datasets (downloaded into the data root
  when missing and the network allows).
- `folder`: an image-folder tree `train/<class>/*`, `test/<class>/*`, either a
  directory or a .tar / .tar.gz archive of one (read without extracting).
  Decoded images are cached under `$FT_CACHE_DIR` (default ~/.cache/factor_transfer).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils import distributed
from utils.errors import UserError

DATASETS = ("cifar10", "cifar100", "folder")

# Normalization constants as the paper's code uses them (the authors' released scripts).
NORM_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (
        (129.3 / 255, 124.1 / 255, 112.4 / 255),
        (68.2 / 255, 65.4 / 255, 70.4 / 255),
    ),
    # The attention-transfer authors' CIFAR recipe (Zagoruyko & Komodakis 2017), which
    # the paper's Table 2 follows ("the same experimental environment of [31]").
    "at": ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    # torchvision's ImageNet constants (MMRazor's CIFAR configs normalize with these).
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # MMRazor's CIFAR distillation configs: ImgDataPreprocessor(bgr_to_rgb=True) reverses
    # the channels of mmcls's CIFAR images, which are RGB already, then subtracts the RGB
    # ImageNet constants; `load_data` reverses the channels for this entry (docs/mmrazor.md).
    "imagenet_bgr": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
CHANNELS_REVERSED = {"imagenet_bgr"}
# The folder source is meant for the CIFAR-10 copy; `--norm computed` measures instead.
DEFAULT_NORM = {"cifar10": "cifar10", "cifar100": "cifar100", "folder": "cifar10"}

PAD = 4  # padding of the random crop
# "zero": the paper's recipe (black border, torchvision's RandomCrop(32, padding=4));
# "reflect": the attention-transfer code's (OpenCV BORDER_REFLECT: the border mirrors
# the image with its edge pixel repeated, ...cba|abc...), Table 2's environment.
PAD_MODES = ("zero", "reflect")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


@dataclass
class ImageData:
    """A dataset as uint8 NCHW tensors plus its normalization."""

    name: str
    train_x: torch.Tensor  # (N, 3, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # (1, 3, 1, 1) float32, in [0, 1] units
    std: torch.Tensor
    pad_mode: str = "zero"  # the random crop's padding: "zero" or "reflect" (see `crop_flip`)

    def to(self, device: torch.device | str) -> "ImageData":
        move = lambda t: t.to(device)  # noqa: E731
        return ImageData(self.name, move(self.train_x), move(self.train_y), move(self.test_x),
                         move(self.test_y), self.num_classes, move(self.mean), move(self.std),
                         self.pad_mode)

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float().div_(255) - self.mean) / self.std

    # The data interface the training loop uses (utils.imagenet.ImageNetData has the same).
    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def image_size(self) -> tuple[int, int]:
        """Height and width of the images the networks are given (group shapes follow)."""
        return tuple(self.test_x.shape[-2:])

    def batches(self, batch_size: int, seed: int, augment: bool = True):
        """`iteration -> (x, y)`: the normalized, augmented training batch of that step.
        Under torchrun every rank draws the global batch and keeps its share."""
        sampler = BatchSampler(len(self.train_y), batch_size, seed, self.device)
        return lambda iteration: distributed.local_batch(*train_batch(self, sampler, iteration, seed,
                                                                      augment=augment))

    def val_batches(self, batch_size: int):
        """Normalized test images and labels in batches, over this process's shard of the
        test set (the whole set in one process)."""
        part = distributed.shard(len(self.test_y))
        for start in range(part.start, part.stop, batch_size):
            stop = min(start + batch_size, part.stop)
            yield self.normalize(self.test_x[start:stop]), self.test_y[start:stop]


# ----------------------------------------------------------------------------- loading

def load_data(dataset: str, root: str | os.PathLike, norm: str | None = None,
              train_subset: int | None = None, test_subset: int | None = None,
              download: bool = True, pad_mode: str = "zero") -> ImageData:
    """Load a dataset as uint8 tensors on the CPU (move with `.to(device)`)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    if dataset == "folder":
        train_x, train_y, test_x, test_y, classes = _load_folder(Path(root))
    else:
        train_x, train_y, test_x, test_y, classes = _load_torchvision(dataset, Path(root), download)
    norm = norm or DEFAULT_NORM[dataset]
    if norm == "computed":
        pixels = train_x.float().div(255)
        mean, std = pixels.mean(dim=(0, 2, 3)).tolist(), pixels.std(dim=(0, 2, 3)).tolist()
    elif norm in NORM_STATS:
        mean, std = NORM_STATS[norm]
    else:
        raise UserError(f"unknown normalization '{norm}'; choose {', '.join(NORM_STATS)} or computed")
    if norm in CHANNELS_REVERSED:
        train_x, test_x = train_x.flip(1), test_x.flip(1)
    if train_subset is not None:
        keep = balanced_subset(train_y, train_subset, len(classes))
        train_x, train_y = train_x[keep], train_y[keep]
    if test_subset is not None:
        keep = balanced_subset(test_y, test_subset, len(classes), what="--test-subset")
        test_x, test_y = test_x[keep], test_y[keep]
    if pad_mode not in PAD_MODES:
        raise UserError(f"unknown padding '{pad_mode}'; choose one of {', '.join(PAD_MODES)}")
    return ImageData(dataset, train_x, train_y, test_x, test_y, len(classes),
                     torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1), pad_mode)


def train_size(dataset: str, root: str | os.PathLike, train_subset: int | None = None) -> int:
    """Number of training images `load_data` would give (for epoch-based schedules)."""
    if train_subset is not None:
        return train_subset
    if dataset in ("cifar10", "cifar100"):
        return 50_000
    return len(_load_folder(Path(root))[1])


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int = 0,
                    what: str = "--train-subset") -> torch.Tensor:
    """Indices of `n` images, as equal a number per class as possible.

    The choice depends only on `seed` (not on a run's --seed), so every method and
    every seed of a reduced-scale experiment sees the same images.
    """
    if n <= 0 or n > len(labels):
        raise UserError(f"{what} must be between 1 and {len(labels)}, got {n}")
    gen = torch.Generator().manual_seed(seed)
    per_class = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    chosen = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        if len(idx) < per_class[c]:
            raise UserError(f"{what} {n} needs {per_class[c]} images of class {c}, "
                            f"the set has {len(idx)}")
        chosen.append(idx[: per_class[c]])
    return torch.cat(chosen).sort().values


def _load_torchvision(dataset: str, root: Path, download: bool):
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[dataset]
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError:
        if not download:
            raise UserError(f"{dataset} not found in {root}; put the python-version archive "
                            f"(extracted) there or allow downloading") from None
        try:
            train = cls(str(root), train=True, download=True)
            test = cls(str(root), train=False, download=True)
        except Exception as exc:  # no network, proxy, disk full...
            archive = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[dataset]
            raise UserError(
                f"{dataset} is not in {root} and could not be downloaded ({type(exc).__name__}); "
                f"on an offline machine put {archive} (or its extracted folder) in {root}, "
                f"or use --dataset folder --data-root DIR") from None

    def as_tensors(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    return (*as_tensors(train), *as_tensors(test), list(train.classes))


def _cache_dir() -> Path:
    return Path(os.environ.get("FT_CACHE_DIR", Path.home() / ".cache" / "factor_transfer"))


def _load_folder(root: Path):
    """Read `train/<class>/*` and `test/<class>/*` from a directory or a tar archive."""
    if not root.exists():
        raise UserError(f"data folder {root} does not exist; pass --data-root DIR with "
                        f"train/<class>/ and test/<class>/ inside (or a .tar.gz of them)")
    stat = root.stat()
    key = hashlib.sha1(f"{root.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"folder-{key}.pt"
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], blob["classes"]
        except Exception:
            cache.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
    files = _list_archive(root) if root.is_file() else _list_directory(root)
    splits = {}
    for split in ("train", "test"):
        entries = files.get(split)
        if not entries:
            raise UserError(f"{root} has no {split}/<class>/ images; expected train/<class>/* and "
                            f"test/<class>/* (the CIFAR-10 copy: ../shared/data/cifar10-jpeg.tar.gz)")
        splits[split] = entries
    classes = sorted({c for c, _, _ in splits["train"]})
    unknown = sorted({c for c, _, _ in splits["test"]} - set(classes))
    if unknown:
        raise UserError(f"{root}: test/ has classes missing from train/: {', '.join(unknown)}")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        entries = sorted(splits[split], key=lambda e: (e[0], e[1]))
        images = np.stack([_decode(name, read) for _, name, read in entries])
        out.append(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
        out.append(torch.tensor([index[c] for c, _, _ in entries], dtype=torch.int64))
    shapes = {tuple(t.shape[1:]) for t in out[0::2]}
    if len(shapes) != 1:
        raise UserError(f"{root}: images differ in size {sorted(shapes)}; all must share one size")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({"train_x": out[0], "train_y": out[1], "test_x": out[2], "test_y": out[3],
                    "classes": classes}, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs the decode next time
    return (*out, classes)


def _split_path(parts: list[str]):
    """('.../train/cat/0001.jpg') -> ('train', 'cat') when the path has that shape."""
    if len(parts) >= 3 and parts[-3] in ("train", "test") and parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return parts[-3], parts[-2]
    return None


def _list_directory(root: Path):
    files: dict[str, list] = {}
    for split in ("train", "test"):
        base = root / split
        if not base.is_dir():
            continue
        for path in base.glob("*/*"):
            found = _split_path(list(path.relative_to(root).parts))
            if found:
                files.setdefault(split, []).append((found[1], str(path), path.read_bytes))
    return files


def _list_archive(root: Path):
    try:
        archive = tarfile.open(root)
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"{root} is neither a folder nor a readable tar archive ({exc})") from None
    files: dict[str, list] = {}
    with archive:
        for member in archive:
            found = _split_path(member.name.split("/")) if member.isfile() else None
            if found:
                data = archive.extractfile(member).read()
                files.setdefault(found[0], []).append((found[1], f"{root}:{member.name}", lambda d=data: d))
    return files


def _decode(name: str, read) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(read())) as image:
            return np.asarray(image.convert("RGB"))
    except Exception:
        raise UserError(f"cannot read image {name}; remove or replace the file") from None


# ----------------------------------------------------------------------------- batches

def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) only, so a
    resumed run draws exactly the batches an uninterrupted one would."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


class BatchSampler:
    """Batch indices by iteration; the last partial batch of each epoch is dropped so
    every step has the same shape (the order is reshuffled every epoch, so no image
    is favoured)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device):
        if batch_size > n:
            raise UserError(f"--batch-size {batch_size} is larger than the training set ({n} images)")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, step = divmod(iteration, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.n, self.seed, epoch, self.device)
        return self._perm[step * self.batch_size:(step + 1) * self.batch_size]


def augment_generator(seed: int, iteration: int, device: torch.device) -> torch.Generator:
    """Randomness of one step's augmentation, a function of (seed, iteration)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + 7919 * iteration + 1)
    return gen


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = PAD,
                     pad_mode: str = "zero") -> torch.Tensor:
    """Random crop of the padded image and random horizontal flip, batched.

    Same distribution as torchvision's RandomCrop(H, padding=pad) followed by
    RandomHorizontalFlip(): each of the (2*pad+1)^2 offsets equally likely, flip
    with probability 1/2; padding pixels are 0 (black, before normalization) or,
    with pad_mode "reflect", the mirrored image (`crop_flip`).
    """
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen, device=x.device)
    flips = torch.rand(n, generator=gen, device=x.device) < 0.5
    return crop_flip(x, offsets[0], offsets[1], flips, pad, pad_mode)


def _mirror(i: torch.Tensor, size: int) -> torch.Tensor:
    """Index into [0, size) of coordinate `i` in [-size, 2 size) under BORDER_REFLECT
    (edge pixel repeated: -1 -> 0, -2 -> 1, size -> size - 1)."""
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= size, 2 * size - 1 - i, i)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int = PAD, pad_mode: str = "zero") -> torch.Tensor:
    """Crop each image of the padded batch at (dy, dx) and mirror where `flip`.

    One `gather` over each image's flattened pixels, the index shared by the
    channels: 4-5x faster on the CPU than indexing with four broadcast index tensors.
    "zero" gathers from the zero-padded image; "reflect" maps the padded coordinates
    back into the image (`_mirror`), so no padded copy is made.
    """
    n, c, h, w = x.shape
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h) in padded coordinates
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    if pad_mode == "reflect":
        pixel = _mirror(rows - pad, h)[:, :, None] * w + _mirror(cols - pad, w)[:, None, :]
        return x.flatten(2).gather(2, pixel.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    pixel = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # (n, h, w) into the padded image
    return padded.flatten(2).gather(2, pixel.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def train_batch(data: ImageData, sampler: BatchSampler, iteration: int, seed: int,
                augment: bool = True):
    """The normalized, augmented batch of a training step and its labels."""
    idx = sampler.indices(iteration)
    x = data.train_x[idx]
    if augment:
        x = random_crop_flip(x, augment_generator(seed, iteration, x.device), pad_mode=data.pad_mode)
    return data.normalize(x), data.train_y[idx]

