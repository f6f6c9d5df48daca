"""A small synthetic dataset in VOC 2007's layout, for the tests and the CPU checks of
docs/detection.md: JPEG images of noisy grey background with one to three shapes, each
shape a class (a red square "aeroplane", a green disc "bicycle", a blue triangle "bird"),
and their XML annotations; about one object in eight is marked difficult.

    python -m detection.synthetic data/voc-synthetic --train 64 --test 32 --size 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from detection.data import VOC_CLASSES

SHAPES = {"aeroplane": (220, 40, 40), "bicycle": (40, 200, 40), "bird": (40, 60, 230)}


def _draw(pixels: np.ndarray, kind: str, x0: int, y0: int, side: int) -> None:
    yy, xx = np.mgrid[0:side, 0:side]
    if kind == "aeroplane":
        mask = np.ones((side, side), dtype=bool)
    elif kind == "bicycle":
        mask = (xx - side / 2 + 0.5) ** 2 + (yy - side / 2 + 0.5) ** 2 <= (side / 2) ** 2
    else:
        mask = np.abs(xx - side / 2 + 0.5) <= yy / 2 + 0.5
    region = pixels[y0:y0 + side, x0:x0 + side]
    region[mask] = SHAPES[kind]


def _xml(name: str, size: tuple[int, int], objects: list) -> str:
    h, w = size
    parts = [f"<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>",
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for kind, (x1, y1, x2, y2), difficult in objects:
        parts.append(f"<object><name>{kind}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def make_synthetic_voc(root: str | Path, train: int = 64, test: int = 32, size: int = 128,
                       seed: int = 0) -> Path:
    """Write the dataset under `root` (VOCdevkit/VOC2007/...); returns `root`.  Image sides
    vary between 3/4 and 1 times `size`, so batches hold images of different sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    kinds = list(SHAPES)
    assert all(k in VOC_CLASSES for k in kinds)
    names = {"trainval": [], "test": []}
    for split, count in (("trainval", train), ("test", test)):
        for i in range(count):
            name = f"{split[:2]}{i:05d}"
            h, w = (int(rng.integers(size * 3 // 4, size + 1)) for _ in range(2))
            pixels = np.clip(rng.normal(120, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
            objects = []
            for _ in range(int(rng.integers(1, 4))):
                kind = kinds[int(rng.integers(len(kinds)))]
                side = int(rng.integers(min(h, w) // 4, min(h, w) // 2 + 1))
                x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                _draw(pixels, kind, x0, y0, side)
                # VOC boxes: inclusive 1-based pixel indices
                objects.append((kind, (x0 + 1, y0 + 1, x0 + side, y0 + side), rng.random() < 0.125))
            Image.fromarray(pixels).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
            (base / "Annotations" / f"{name}.xml").write_text(_xml(name, (h, w), objects))
            names[split].append(name)
    for split, listed in names.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in listed))
    return Path(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write (VOCdevkit/VOC2007/... inside)")
    parser.add_argument("--train", type=int, default=64, help="trainval images (default: 64)")
    parser.add_argument("--test", type=int, default=32, help="test images (default: 32)")
    parser.add_argument("--size", type=int, default=128, help="largest image side (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    make_synthetic_voc(args.root, args.train, args.test, args.size, args.seed)
    print(f"wrote {args.train} trainval and {args.test} test images under {args.root}")


if __name__ == "__main__":
    main()
