"""PASCAL VOC 2007 for detection: the 20 classes, annotations, and batches by iteration.

The data are read through `torchvision.datasets.VOCDetection` (`--download` fetches them;
offline, `--data-root` holds the same layout: VOCdevkit/VOC2007/{JPEGImages, Annotations,
ImageSets/Main/<split>.txt}).  Images are decoded when a batch is drawn, not held in memory.

Boxes: the devkit's inclusive 1-based pixel boxes [xmin, xmax] become continuous
(xmin - 1, ymin - 1, xmax, ymax), so that the continuous IoU of detection/metric.py equals
the devkit's "+1" IoU.  Objects marked difficult are kept in the test annotations (the
metric ignores them) and left out of training, as py-faster-rcnn does (TRAIN.USE_DIFF
False); training images left without an object are skipped.

Which images make a step, and whether each is flipped (horizontal flips, the one
augmentation of Faster R-CNN), is a function of (seed, iteration) (`utils.data`), so a run
resumed from a checkpoint draws the batches an uninterrupted one would.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detection.metric import GroundTruth
from utils.data import BatchSampler, augment_generator
from utils.errors import UserError

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
NUM_CLASSES = len(VOC_CLASSES) + 1  # label 0 is the background


@dataclass
class Annotated:
    """One image: its file and its objects (boxes as the module docstring says; labels 1..20)."""

    path: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    def truth(self) -> GroundTruth:
        return GroundTruth(self.boxes, self.labels, self.difficult)

    def trains(self) -> bool:
        """Whether training sees the image: it has a non-difficult object."""
        return bool((~self.difficult).any())


def parse_voc_objects(xml_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (N, 4), labels (N,), difficult (N,)) of a VOC annotation file."""
    root = ET.parse(xml_path).getroot()
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in VOC_CLASSES:
            raise UserError(f"{xml_path}: object class '{name}' is not one of the 20 VOC classes")
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(VOC_CLASSES.index(name) + 1)
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
            np.asarray(difficult, dtype=bool))


def read_voc_split(root: str | Path, split: str, download: bool = False) -> list[Annotated]:
    """Every image of VOC 2007's `split` (trainval, test, train, val) under `root`."""
    from torchvision.datasets import VOCDetection

    try:
        dataset = VOCDetection(str(root), year="2007", image_set=split, download=download)
    except (RuntimeError, FileNotFoundError):
        raise UserError(f"--data-root {root}: no VOC 2007 {split} split there (expected "
                        f"{Path(root) / 'VOCdevkit/VOC2007'}/JPEGImages, Annotations and "
                        f"ImageSets/Main/{split}.txt); pass --download to fetch it with torchvision, "
                        f"or point --data-root at a copy") from None
    images = []
    for image, xml in zip(dataset.images, dataset.annotations):
        if not Path(xml).is_file():
            raise UserError(f"--data-root {root}: {xml} is missing; the VOC copy is incomplete")
        images.append(Annotated(image, *parse_voc_objects(xml)))
    return images


def decode(path: str) -> torch.Tensor:
    """An image file as a float tensor (3, H, W) in [0, 1] (the detector normalises it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        raise UserError(f"{path} is missing or not a readable image; the VOC copy is damaged") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)


class VOCData:
    """Training and test images of one run; `batches` / `test_batches` feed `utils.train.fit`
    and the evaluation."""

    num_classes = NUM_CLASSES

    def __init__(self, train: list[Annotated], test: list[Annotated], device: torch.device,
                 flip: bool = True):
        self.test = test
        # Training: the non-difficult objects of each image; images without one are skipped.
        self.train = []
        for a in train:
            if a.trains():
                keep = ~a.difficult
                self.train.append(Annotated(a.path, a.boxes[keep], a.labels[keep], a.difficult[keep]))
        if not self.train:
            raise UserError("the training split has no image with a non-difficult object")
        self._device, self.flip = device, flip

    @property
    def device(self) -> torch.device:
        return self._device

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.train) // batch_size

    def batches(self, batch_size: int, seed: int):
        """iteration -> (images, targets): lists for torchvision's detector, on the device."""
        sampler = BatchSampler(len(self.train), batch_size, seed, torch.device("cpu"))

        def batch(iteration: int):
            indices = sampler.indices(iteration).tolist()
            flips = (torch.rand(len(indices), generator=augment_generator(seed, iteration, torch.device("cpu")))
                     < 0.5).tolist() if self.flip else [False] * len(indices)
            images, targets = [], []
            for i, flip in zip(indices, flips):
                image, boxes = decode(self.train[i].path), torch.from_numpy(self.train[i].boxes.copy())
                if flip:
                    width = image.shape[-1]
                    image = image.flip(-1)
                    boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
                images.append(image.to(self.device))
                targets.append({"boxes": boxes.to(self.device),
                                "labels": torch.from_numpy(self.train[i].labels.copy()).to(self.device)})
            return images, targets

        return batch

    def test_batches(self, batch_size: int):
        """(images, their Annotated records) over the test split, in order."""
        for start in range(0, len(self.test), batch_size):
            chunk = self.test[start:start + batch_size]
            yield [decode(a.path).to(self.device) for a in chunk], chunk


def load_voc(root: str | Path, train_split: str, test_split: str, device: torch.device,
             download: bool = False, train_subset: int | None = None, test_subset: int | None = None,
             flip: bool = True) -> VOCData:
    """The run's data; `*_subset` N keeps the first N images of a split (quick checks)."""
    train = read_voc_split(root, train_split, download)[:train_subset]
    test = read_voc_split(root, test_split, download)[:test_subset]
    return VOCData(train, test, device, flip)


def count_train_images(root: str | Path, split: str, download: bool = False, train_subset: int | None = None) -> int:
    """The images of `load_voc`'s training set (those with a non-difficult object), from the
    annotations alone: what an epoch counts."""
    return sum(a.trains() for a in read_voc_split(root, split, download)[:train_subset])
