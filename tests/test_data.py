"""Datasets in memory: CIFAR files (folder and archive), image folders, digits, seeded splits, errors."""

import pickle
import tarfile

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from relucut.data import carve, channel_stats, load_dataset
from relucut.data.splits import Split
from relucut.errors import RelucutError


def write_cifar10(folder, per_batch=20, with_filenames=False, with_test=True):
    """A fake CIFAR-10 in the python-version layout; pixels encode (batch, index) to check order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if with_test else [])
    for b, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, 0] = b
        data[:, 1] = np.arange(per_batch)
        batch = {b"data": data, b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        if with_filenames:
            batch[b"filenames"] = [f"{i}.png".encode() for i in range(per_batch)]
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return folder


def test_cifar10_folder_without_filenames_loads_in_order(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path, val_fraction=0.1, seed=3)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    assert data.train.images.dtype == torch.uint8 and data.input_size == (3, 32, 32)
    assert data.classes[:2] == ["c0", "c1"]
    # train + val are exactly the 100 training images, none lost or repeated
    both = torch.cat([data.train.images, data.val.images])
    ids = sorted((int(i[0, 0, 0]), int(i[0, 0, 1])) for i in both)
    assert ids == [(b, i) for b in range(5) for i in range(20)]
    assert torch.all(data.test.images[:, 0, 0, 0] == 5)


def test_cifar_archive_and_direct_folder_give_the_same_pixels(tmp_path):
    folder = write_cifar10(tmp_path / "x" / "cifar-10-batches-py", with_filenames=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    from_archive = load_dataset("cifar10", archive, seed=1)
    from_parent_dir = load_dataset("cifar10", tmp_path, seed=1)  # finds the archive inside
    from_folder = load_dataset("cifar10", folder, seed=1)
    for other in (from_parent_dir, from_folder):
        assert torch.equal(from_archive.train.images, other.train.images)
        assert torch.equal(from_archive.test.labels, other.test.labels)


def test_cifar100_layout_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name, n in (("train", 30), ("test", 10)):
        batch = {b"data": np.zeros((n, 3072), np.uint8), b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}
        (root / name).write_bytes(pickle.dumps(batch))
    data = load_dataset("cifar100", tmp_path, val_fraction=0.0)
    assert data.num_classes == 100 and len(data.train) == 30 and len(data.val) == 0
    assert data.test.labels.tolist() == list(range(10))


def test_folder_without_test_batch_has_no_test_split(tmp_path):
    write_cifar10(tmp_path / "c", with_test=False)
    data = load_dataset("cifar10", tmp_path / "c")
    assert data.test is None
    with pytest.raises(RelucutError, match="no test split"):
        data.split("test")


def test_split_argument_returns_one_split(tmp_path):
    write_cifar10(tmp_path / "c")
    val = load_dataset("cifar10", tmp_path / "c", split="val", val_fraction=0.2)
    assert isinstance(val, Split) and len(val) == 20


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(RelucutError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(RelucutError, match="no cifar10 files"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(RelucutError, match="needs its files"):
        load_dataset("tinyimagenet")


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip" * 10)
    with pytest.raises(RelucutError, match="corrupt archive"):
        load_dataset("cifar10", tmp_path)


def test_truncated_batch_is_a_clear_error(tmp_path):
    folder = write_cifar10(tmp_path / "c")
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RelucutError, match="corrupt CIFAR file .*data_batch_3"):
        load_dataset("cifar10", folder)


def test_cli_missing_dataset_path_is_one_line(tmp_path):
    proc = run_cli("train", "resnet6", "--dataset", "cifar10", "--data-dir", tmp_path / "nope",
                   "--epochs", "1", "--out", tmp_path / "run")
    assert_one_line_error(proc, "does not exist", "--data-dir")


def test_digits_splits_are_seeded_and_the_test_split_is_fixed():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert (len(a.train) + len(a.val) + len(a.test)) == 1797
    assert a.input_size == (1, 8, 8) and a.num_classes == 10 and a.train.images.max() == 255
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.labels, c.val.labels) or not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the seed only moves train/val


def test_carve_is_a_partition():
    split = Split(torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1), torch.arange(50))
    rest, val = carve(split, 0.2, seed=5)
    assert len(val) == 10 and sorted(rest.labels.tolist() + val.labels.tolist()) == list(range(50))


def test_tail_validation_is_the_last_training_images(tmp_path):
    write_cifar10(tmp_path / "c")
    data = load_dataset("cifar10", tmp_path / "c", val_fraction=0.1, val_from="tail")
    # the last 10 of 100 training images: the second half of data_batch_5
    assert data.val.images[:, 0, 0, 0].tolist() == [4] * 10
    assert data.val.images[:, 0, 0, 1].tolist() == list(range(10, 20))
    assert len(data.train) == 90 and data.train.images[-1, 0, 0, 1] == 9


def test_channel_stats_match_numpy():
    images = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=3)
    x = images.numpy().astype(np.float64) / 255
    assert np.allclose(mean, x.mean(axis=(0, 2, 3)))
    assert np.allclose(std, x.std(axis=(0, 2, 3)))


def _png(path, color, size=(10, 12)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_resizes_and_labels_by_sorted_class(tmp_path):
    for cls, color in (("cat", (255, 0, 0)), ("ant", (0, 255, 0))):
        for i in range(3):
            _png(tmp_path / "train" / cls / f"{i}.png", color)
        _png(tmp_path / "test" / cls / "0.png", color)
    data = load_dataset("imagefolder", tmp_path, image_size=16, val_fraction=0.0)
    assert data.classes == ["ant", "cat"] and data.num_classes == 2
    assert data.train.images.shape == (6, 3, 16, 16) and len(data.test) == 2
    green = data.train.images[data.train.labels == 0]
    assert torch.all(green[:, 1] == 255) and torch.all(green[:, 0] == 0)


def test_tinyimagenet_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    for wnid in ("n01", "n02"):
        for i in range(2):
            _png(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (10, 20, 30), size=(64, 64))
    (base / "wnids.txt").write_text("n01\nn02\n")
    _png(base / "val" / "images" / "val_0.JPEG", (1, 2, 3), size=(64, 64))
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t63\t63\n")
    data = load_dataset("tinyimagenet", tmp_path, val_fraction=0.0)
    assert data.train.images.shape == (4, 3, 64, 64) and data.train.labels.tolist() == [0, 0, 1, 1]
    assert data.test.labels.tolist() == [1]
