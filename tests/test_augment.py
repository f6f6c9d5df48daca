"""The batched augmentation is the authors' PIL recipe: same pixels, same distribution.

Their recipe (torchvision): RandomCrop(32, padding=4) -> RandomHorizontalFlip() ->
ToTensor() -> Normalize(mean, std).  Ours: `random_crop_flip` on uint8 batches, then
`ImageData.normalize`.
"""

import pytest
import torch

from utils.data import (NORM_STATS, PAD, BatchSampler, ImageData, augment_generator, crop_flip,
                        random_crop_flip, train_batch)

SIDE = 32
OFFSETS = 2 * PAD + 1  # 9 crop positions per axis, 81 in all


def cifar_like(n: int, seed: int = 0) -> ImageData:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIDE, SIDE), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    mean, std = NORM_STATS["cifar10"]
    return ImageData("test", x, y, x[:0], y[:0], 10, torch.tensor(mean).view(1, 3, 1, 1),
                     torch.tensor(std).view(1, 3, 1, 1))


def pil_recipe(image_chw: torch.Tensor, top: int, left: int, flip: bool, mean, std) -> torch.Tensor:
    """torchvision's functional steps, with RandomCrop's (top, left) and the flip fixed."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    img = Image.fromarray(image_chw.permute(1, 2, 0).numpy())
    img = TF.crop(TF.pad(img, PAD, fill=0), top, left, SIDE, SIDE)
    if flip:
        img = TF.hflip(img)
    return TF.normalize(TF.to_tensor(img), mean, std)


def test_crop_flip_equals_pil_recipe_at_every_offset():
    data = cifar_like(1)
    mean, std = NORM_STATS["cifar10"]
    tops, lefts, flips = torch.meshgrid(torch.arange(OFFSETS), torch.arange(OFFSETS),
                                        torch.arange(2), indexing="ij")
    tops, lefts, flips = tops.flatten(), lefts.flatten(), flips.flatten().bool()
    ours = data.normalize(crop_flip(data.train_x.expand(len(tops), -1, -1, -1), tops, lefts, flips))
    for i in range(len(tops)):
        theirs = pil_recipe(data.train_x[0], int(tops[i]), int(lefts[i]), bool(flips[i]), mean, std)
        torch.testing.assert_close(ours[i], theirs, rtol=0, atol=1e-6)


def position_image() -> torch.Tensor:
    """Channel 0 holds row + 1, channel 1 column + 1, channel 2 255: a crop's position and
    flip can be read back, and padding (0 in every channel) told from the image."""
    rows = torch.arange(1, SIDE + 1, dtype=torch.uint8)
    return torch.stack([rows[:, None].expand(SIDE, SIDE), rows[None, :].expand(SIDE, SIDE),
                        torch.full((SIDE, SIDE), 255, dtype=torch.uint8)])


def read_back(out: torch.Tensor):
    """(top, left, flip) of each crop of `position_image()`; see `position_image`."""
    mid = SIDE // 2  # the centre pixel is inside the image at every offset
    top = out[:, 0, mid, mid].long() - 1 - mid + PAD
    flip = out[:, 1, mid, mid + 1] < out[:, 1, mid, mid]
    col = out[:, 1, mid, mid].long() - 1
    left = torch.where(flip, col - (SIDE - 1 - mid), col - mid) + PAD
    return top, left, flip


def test_random_crop_flip_distribution():
    n = OFFSETS * OFFSETS * 100
    out = random_crop_flip(position_image().expand(n, -1, -1, -1), augment_generator(0, 0, torch.device("cpu")))
    top, left, flip = read_back(out)

    # Every pixel is the image's pixel at (row + top - PAD, col + left - PAD), mirrored
    # where flipped, or 0 (zero padding) where that falls outside the image.
    expected = crop_flip(position_image().expand(n, -1, -1, -1), top, left, flip)
    assert torch.equal(out, expected)
    r = torch.arange(SIDE)[None, :, None] + top[:, None, None] - PAD
    c = torch.arange(SIDE)[None, None, :]
    c = torch.where(flip[:, None, None], SIDE - 1 - c, c) + left[:, None, None] - PAD
    inside = (r >= 0) & (r < SIDE) & (c >= 0) & (c < SIDE)
    assert torch.equal(out[:, 2] == 255, inside) and torch.equal(out[:, 2] == 0, ~inside)
    assert torch.equal(out[:, 0].long(), torch.where(inside, r + 1, 0))

    # All 81 offsets reachable and uniform: chi-square with 80 degrees of freedom, whose
    # 0.999 quantile is 124.8 (the draws are seeded, so this never flakes).
    counts = torch.bincount(top * OFFSETS + left, minlength=OFFSETS * OFFSETS).double()
    assert counts.min() > 0 and len(counts) == OFFSETS * OFFSETS
    expected_count = n / OFFSETS ** 2
    assert ((counts - expected_count) ** 2 / expected_count).sum() < 124.8
    # Flip with probability 1/2: within 4 standard deviations (0.5 / sqrt(n) each).
    assert abs(flip.double().mean().item() - 0.5) < 4 * 0.5 / n ** 0.5
    # Flips independent of the offset: as often flipped left of centre as right of it.
    assert abs(flip[left < PAD].double().mean() - flip[left > PAD].double().mean()) < 0.05


def test_torchvision_recipe_draws_the_same_distribution():
    """torchvision's RandomCrop + RandomHorizontalFlip, read back the same way, are uniform
    over the same 81 offsets and flip half the time: the distribution ours reproduces."""
    import torchvision.transforms as T
    from PIL import Image

    torch.manual_seed(0)
    recipe = T.Compose([T.RandomCrop(SIDE, padding=PAD), T.RandomHorizontalFlip(), T.PILToTensor()])
    image = Image.fromarray(position_image().permute(1, 2, 0).numpy())
    n = OFFSETS * OFFSETS * 20
    top, left, flip = read_back(torch.stack([recipe(image) for _ in range(n)]))
    counts = torch.bincount(top * OFFSETS + left, minlength=OFFSETS * OFFSETS).double()
    assert len(counts) == OFFSETS * OFFSETS and counts.min() > 0
    assert ((counts - n / OFFSETS ** 2) ** 2 / (n / OFFSETS ** 2)).sum() < 124.8
    assert abs(flip.double().mean().item() - 0.5) < 4 * 0.5 / n ** 0.5


def test_normalize_equals_to_tensor_and_normalize():
    import torchvision.transforms.functional as TF

    data = cifar_like(4)
    mean, std = NORM_STATS["cifar10"]
    theirs = torch.stack([TF.normalize(TF.to_tensor(img.permute(1, 2, 0).numpy()), mean, std)
                          for img in data.train_x])
    torch.testing.assert_close(data.normalize(data.train_x), theirs, rtol=0, atol=1e-6)


def test_draws_are_a_function_of_seed_and_iteration_only():
    data = cifar_like(256)
    cpu = torch.device("cpu")
    sampler = BatchSampler(256, 64, seed=5, device=cpu)
    forward = [train_batch(data, sampler, it, seed=5) for it in range(10)]  # crosses 2 epochs

    # Other orders, fresh samplers and a disturbed global RNG give the same batches.
    for it in reversed(range(10)):
        torch.manual_seed(1234 + it)
        torch.rand(17)
        x, y = train_batch(data, BatchSampler(256, 64, seed=5, device=cpu), it, seed=5)
        assert torch.equal(x, forward[it][0]) and torch.equal(y, forward[it][1])

    # Another iteration or another seed draws other crops (same images: augmentation only).
    gen_a = augment_generator(5, 3, cpu)
    gen_b = augment_generator(5, 4, cpu)
    gen_c = augment_generator(6, 3, cpu)
    draws = [torch.randint(0, OFFSETS, (2, 64), generator=g) for g in (gen_a, gen_b, gen_c)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(torch.randint(0, OFFSETS, (2, 64), generator=augment_generator(5, 3, cpu)), draws[0])


@pytest.mark.parametrize("augment", [True, False])
def test_train_batch_is_normalized_crop_of_sampled_images(augment):
    data = cifar_like(100)
    sampler = BatchSampler(100, 20, seed=1, device=torch.device("cpu"))
    x, y = train_batch(data, sampler, 7, seed=1, augment=augment)
    idx = sampler.indices(7)
    assert torch.equal(y, data.train_y[idx])
    raw = data.train_x[idx]
    if augment:
        raw = random_crop_flip(raw, augment_generator(1, 7, torch.device("cpu")))
    torch.testing.assert_close(x, data.normalize(raw), rtol=0, atol=0)
