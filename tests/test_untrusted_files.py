"""Files from others are data, never code (issue 19, items 1, 2 and 6).

A hostile file names ``os:system`` (or pickles a call of it) with a command that would create a
marker file: every test asserts one line on stderr, exit 2, and that the marker does not exist.
"""

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from relucut.errors import RelucutError
from relucut.export import export_model, load_export
from relucut.models import registry
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan

USER_NET = "fixtures.user_nets:user_net"
TINY = ModelSpec("resnet6", 10, 1, 8, {"base_width": 4})


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models: one torch thread (conftest's fixture)."""


def hostile_spec(marker: Path) -> dict:
    """What an attacker writes where a model spec goes: a call of os.system that leaves ``marker``."""
    # 3 channels: os.system takes no in_chans, and relucut before the fix ran it for RGB specs
    return {"name": "os:system", "num_classes": 10, "in_chans": 3, "image_size": 8,
            "kwargs": {"command": f"touch {marker}"}}


def forget(*names):
    """As in a fresh process: these factories were never named here (conftest restores the set)."""
    for name in names:
        registry._TRUSTED.discard(name)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished relucut train run on digits (3 epochs: a teacher that learned)."""
    out = tmp_path_factory.mktemp("run") / "run"
    proc = run_cli("train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "3",
                   "--lr", "0.05", "--schedule", "cosine", "-q", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


# -- 1. recipes and checkpoints may not name code ----------------------------------------------------------
@pytest.fixture
def hostile_export(tmp_path):
    out = tmp_path / "export"
    export_model(TINY, ReLUPlan(), None, out, onnx=False)
    recipe = json.loads((out / "recipe.json").read_text())
    marker = tmp_path / "PWNED"
    recipe["model"] = hostile_spec(marker)
    (out / "recipe.json").write_text(json.dumps(recipe))
    return out, marker


@pytest.mark.parametrize("command", [["count"], ["pi", "estimate"]])
def test_a_hostile_recipe_runs_nothing_on_the_command_line(hostile_export, command):
    out, marker = hostile_export
    proc = run_cli(*command, out)
    assert_one_line_error(proc, "'os:system'", "--trust-factory os:system", "RELUCUT_TRUSTED_FACTORIES")
    assert proc.returncode == 2 and not marker.exists()


def test_a_hostile_recipe_runs_nothing_from_python(hostile_export):
    out, marker = hostile_export
    with pytest.raises(RelucutError, match="trusted_factories=\\['os:system'\\]"):
        load_export(out)
    assert not marker.exists()


def test_a_hostile_export_of_a_run_is_refused_by_eval(trained_run, tmp_path):
    out = tmp_path / "export"
    assert run_cli("export", trained_run, "--out", out, "--no-onnx").returncode == 0
    recipe = json.loads((out / "recipe.json").read_text())
    marker = tmp_path / "PWNED"
    recipe["model"] = hostile_spec(marker)
    (out / "recipe.json").write_text(json.dumps(recipe))
    assert_one_line_error(run_cli("eval", out), "'os:system'", "--trust-factory")
    assert not marker.exists()


@pytest.fixture
def hostile_run(trained_run, tmp_path):
    """A copy of a trained run whose checkpoints' stored config names os:system."""
    run = tmp_path / "hostile_run"
    run.mkdir()
    marker = tmp_path / "PWNED"
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(trained_run / name, weights_only=True)
        ckpt["config"]["model"] = hostile_spec(marker)
        torch.save(ckpt, run / name)
    config = json.loads((trained_run / "config.json").read_text())
    config["model"] = hostile_spec(marker)
    (run / "config.json").write_text(json.dumps(config))
    return run, marker


@pytest.mark.parametrize("case", ["eval", "export", "train --teacher", "snl --teacher"])
def test_a_hostile_checkpoint_config_runs_nothing(hostile_run, tmp_path, case):
    run, marker = hostile_run
    out = tmp_path / "out"
    args = {
        "eval": ["eval", run],
        "export": ["export", run, "--out", out, "--no-onnx"],
        "train --teacher": ["train", "resnet6", "--dataset", "digits", "--base-width", "4", "--epochs", "1",
                            "-q", "--teacher", run, "--out", out],
        "snl --teacher": ["snl", "resnet6", "--dataset", "digits", "--base-width", "4", "--budget", "300",
                          "-q", "--teacher", run, "--out", out],
    }[case]
    assert_one_line_error(run_cli(*args), "'os:system'", "--trust-factory os:system")
    assert not marker.exists() and not out.exists()


def test_a_hostile_checkpoint_config_runs_nothing_from_python(hostile_run):
    from relucut.export import export_run
    from relucut.train import load_checkpoint_model

    run, marker = hostile_run
    with pytest.raises(RelucutError, match="os:system"):
        load_checkpoint_model(run)
    with pytest.raises(RelucutError, match="os:system"):
        export_run(run, run.parent / "exp", onnx=False)
    assert not marker.exists() and not (run.parent / "exp").exists()


def test_a_refused_factory_is_never_imported(tmp_path):
    """The refusal comes before the import: a module that does not exist is not even looked up."""
    out = tmp_path / "export"
    export_model(TINY, ReLUPlan(), None, out, onnx=False)
    recipe = json.loads((out / "recipe.json").read_text())
    recipe["model"]["name"] = "relucut_never_imported_module:factory"
    (out / "recipe.json").write_text(json.dumps(recipe))
    proc = run_cli("count", out)
    assert_one_line_error(proc, "relucut_never_imported_module:factory", "--trust-factory")
    assert "cannot import" not in proc.stderr


# -- the user's own factories keep working, by each opt-in -----------------------------------------------
@pytest.fixture
def user_export(tmp_path):
    spec = ModelSpec(USER_NET, 10, 1, 8)
    out = tmp_path / "user_export"
    export_model(spec, ReLUPlan(), None, out, onnx=False)
    forget(USER_NET)  # what another process, which never named it, sees
    return out


def test_a_users_factory_in_a_file_needs_the_users_word(user_export, monkeypatch):
    assert_one_line_error(run_cli("count", user_export, "--json"), USER_NET, "--trust-factory")
    trusted = run_cli("count", user_export, "--json", "--trust-factory", USER_NET)
    assert trusted.returncode == 0, trusted.stderr
    relus = json.loads(trusted.stdout)["relus"]
    forget(USER_NET)
    monkeypatch.setenv("RELUCUT_TRUSTED_FACTORIES", f"os:getcwd,{USER_NET}")
    by_env = run_cli("count", user_export, "--json")
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["relus"] == relus
    monkeypatch.delenv("RELUCUT_TRUSTED_FACTORIES")
    forget(USER_NET)
    model = load_export(user_export, trusted_factories=[USER_NET])
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_naming_the_factory_yourself_trusts_it(user_export):
    """A spec the user builds in their own code (or names as MODEL) is their choice: its files load."""
    ModelSpec(USER_NET, 10, 1, 8)
    assert load_export(user_export)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_a_users_own_network_trains_distills_and_exports_as_before(tmp_path):
    """Nothing that worked breaks: a factory named on the command line runs through train, KD from
    its own run, export and eval; a later process that never named it needs --trust-factory."""
    common = ["--dataset", "digits", "--epochs", "3", "--lr", "0.05", "--schedule", "cosine", "-q"]
    teacher = run_cli("train", USER_NET, *common, "--out", tmp_path / "teacher")
    assert teacher.returncode == 0, teacher.stderr
    student = run_cli("train", USER_NET, *common[:2], "--epochs", "1", "-q", "--teacher", tmp_path / "teacher",
                      "--out", tmp_path / "student")
    assert student.returncode == 0, student.stderr
    forget(USER_NET)  # a new process
    refused = run_cli("export", tmp_path / "student", "--out", tmp_path / "exp", "--no-onnx")
    assert_one_line_error(refused, USER_NET, "--trust-factory")
    exported = run_cli("export", tmp_path / "student", "--out", tmp_path / "exp", "--no-onnx",
                       "--trust-factory", USER_NET)
    assert exported.returncode == 0, exported.stderr
    forget(USER_NET)
    evaluated = run_cli("eval", tmp_path / "exp", "--trust-factory", USER_NET)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["acc"] == pytest.approx(json.loads(student.stdout)["test_acc"], abs=1e-6)


def test_trust_factory_takes_factory_names_only():
    with pytest.raises(RelucutError, match="package.module:factory"):
        registry.trust_factory("os.system; rm -rf /")
    refused = run_cli("count", "resnet6", "--trust-factory", "not a factory")
    assert_one_line_error(refused, "not a model factory")


# -- python -m relucut does not import from the current folder first --------------------------------------
def test_python_m_relucut_ignores_modules_in_the_current_folder(tmp_path):
    marker = tmp_path / "PWNED"
    for shadow in ("typer", "rich", "torch"):
        (tmp_path / f"{shadow}.py").write_text(f"open({str(marker)!r}, 'w').write('{shadow}')\n")
    proc = run_cli("count", "resnet6", "--dataset", "digits", "--json", cwd=tmp_path, subprocess=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["relus"] > 0 and not marker.exists()


# -- 2. CIFAR pickles are plain data ---------------------------------------------------------------------
class _Call:
    """Pickles as a call of os.system: what a crafted CIFAR file would hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def cifar_folder(root: Path, meta: bytes | None = None, per_batch: int = 10) -> Path:
    """A CIFAR-10 "python version" folder with random pixels; ``meta`` replaces batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)], b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(meta if meta is not None else pickle.dumps(names, protocol=2))
    return root


def train_cifar(data_dir: Path, out: Path):
    return run_cli("train", "resnet6", "--dataset", "cifar10", "--data-dir", data_dir, "--base-width", "4",
                   "--epochs", "1", "-q", "--out", out)


def test_a_hostile_batches_meta_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    meta = pickle.dumps({b"label_names": _Call(f"touch {marker}")}, protocol=2)
    data = cifar_folder(tmp_path / "data", meta=meta)
    proc = train_cifar(data, tmp_path / "out")
    assert_one_line_error(proc, "batches.meta", "not a CIFAR batch file", "posix.system")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_hostile_data_batch_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    data = cifar_folder(tmp_path / "data")
    hostile = pickle.dumps(_Call(f"touch {marker}"), protocol=4)
    (data / "cifar-10-batches-py" / "data_batch_3").write_bytes(hostile)
    assert_one_line_error(train_cifar(data, tmp_path / "out"), "data_batch_3", "not a CIFAR batch file")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("meta, needle", [
    (pickle.dumps({b"label_names": 5}, protocol=2), "not a list of names"),
    (pickle.dumps({b"label_names": [b"a"]}, protocol=2)[:-5], "corrupt CIFAR file"),
    (pickle.dumps([1, 2, 3], protocol=2), "not a dict"),
])
def test_a_malformed_batches_meta_is_one_line(tmp_path, meta, needle):
    data = cifar_folder(tmp_path / "data", meta=meta)
    assert_one_line_error(train_cifar(data, tmp_path / "out"), "batches.meta", needle)
    assert not (tmp_path / "out").exists()


def test_cifar_files_as_numpy_1_wrote_them_still_load(tmp_path):
    """The real files name numpy.core.multiarray (numpy 1, Python 2): the plain-data reader takes them."""
    from relucut.data.cifar import load_cifar

    data = cifar_folder(tmp_path / "data")
    folder = data / "cifar-10-batches-py"
    for path in folder.iterdir():
        raw = path.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        path.write_bytes(raw)
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / "data_batch_1").read_bytes()
    train, test, classes = load_cifar("cifar10", data)
    original = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="bytes")
    assert torch.equal(train.images[10:20].reshape(10, -1), torch.from_numpy(original[b"data"]))
    assert train.labels[10:20].tolist() == original[b"labels"] and len(test) == 10
    assert classes == [f"class{i}" for i in range(10)]


# -- 6. a decompression bomb in an image folder ------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height RGB pixels and holds almost none (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [40_000, 12_000])  # over twice Pillow's limit, and just over it
def test_a_decompression_bomb_png_is_one_line(tmp_path, side):
    from PIL import Image

    for i, name in enumerate(("a", "b")):
        folder = tmp_path / "images" / "train" / name
        folder.mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (8, 8), (100 * i, 0, 0)).save(folder / f"{k}.png")
    _png_header_only(tmp_path / "images" / "train" / "b" / "bomb.png", side, side)
    proc = run_cli("train", "resnet6", "--dataset", "imagefolder", "--data-dir", tmp_path / "images",
                   "--image-size", "8", "--base-width", "4", "--epochs", "1", "-q", "--out", tmp_path / "out")
    assert_one_line_error(proc, "bomb.png", "decompression bomb")
    assert not (tmp_path / "out").exists()
