"""Batched augmentation from memory: crops are windows of the padded image, flips mirror, seeds replay."""

import torch
import torch.nn.functional as F

from relucut.data.splits import Split
from relucut.train.batches import DeviceBatches, epoch_generator


def make_split(n=12, c=2, side=6):
    images = torch.randint(0, 256, (n, c, side, side), dtype=torch.uint8)
    return Split(images, torch.arange(n))


def raw(batches, x):
    """Undoes the normalization: back to the uint8 pixel values."""
    return torch.round((x - batches.shift) / batches.scale).to(torch.int64)


def test_eval_batches_are_in_order_and_normalized():
    split = make_split()
    b = DeviceBatches(split, mean=(0.5, 0.25), std=(0.5, 0.25))
    xs, ys = zip(*b.batches(5))
    assert [len(y) for y in ys] == [5, 5, 2] and torch.equal(torch.cat(ys), split.labels)
    x = torch.cat(xs)
    expected = (split.images.float() / 255 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)


def test_random_crops_are_windows_of_the_zero_padded_image():
    split = make_split()
    b = DeviceBatches(split, (0.0, 0.0), (1.0, 1.0), augment="crop", padding=2)
    x, y = next(b.batches(12, train=True, generator=epoch_generator(0, 0, torch.device("cpu"))))
    pixels = raw(b, x)
    padded = F.pad(split.images, (2, 2, 2, 2)).to(torch.int64)
    offsets = set()
    for img, label in zip(pixels, y):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(padded[label, :, dy:dy + 6, dx:dx + 6], img)]
        assert found, "crop is not a window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 1  # offsets vary across the batch


def test_flips_mirror_about_half_the_images():
    split = make_split(n=200, c=1, side=4)
    b = DeviceBatches(split, (0.0,), (1.0,), augment="flip")
    x, y = next(b.batches(200, train=True, generator=epoch_generator(1, 0, torch.device("cpu"))))
    pixels, originals = raw(b, x), split.images[y].to(torch.int64)
    same = torch.all((pixels == originals).flatten(1), dim=1)
    mirrored = torch.all((pixels == originals.flip(3)).flatten(1), dim=1)
    assert torch.all(same | mirrored)
    assert 60 < int((mirrored & ~same).sum()) < 140


def test_shuffling_replays_per_seed_and_epoch_and_skips_a_lone_last_image():
    b = DeviceBatches(make_split(n=11), (0.0, 0.0), (1.0, 1.0), augment="crop+flip", padding=1)
    cpu = torch.device("cpu")
    run = lambda seed, epoch: [y.tolist() for _, y in b.batches(5, train=True, generator=epoch_generator(seed, epoch, cpu))]
    assert run(0, 3) == run(0, 3)
    assert run(0, 3) != run(0, 4)
    assert [len(y) for y in run(0, 3)] == [5, 5]  # the 11th image alone would break batch norm
    assert b.num_batches(5, train=True) == 2 and b.num_batches(5) == 3
