"""Nothing is overwritten or mismatched in silence (issue 19, items 6 and 7), and the fast subset
needs no SPU environment (item 8).

Each refusal is one line and exit 2, and leaves the folder it refused exactly as it was.
"""

import json
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from relucut.errors import RelucutError
from relucut.export import export_intact, export_model, load_export, verify_export
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan

TINY = ["--dataset", "digits", "--base-width", "4"]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models: one torch thread (conftest's fixture)."""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two trained runs of different networks: resnet6 culled at s1, and resnet6 thinned at s2."""
    root = tmp_path_factory.mktemp("runs")
    for name, edit in (("cull", ["--cull", "s1"]), ("thin", ["--thin", "s2"])):
        proc = run_cli("train", "resnet6", *TINY, "--epochs", "2", "--lr", "0.05", *edit, "-q",
                       "--out", root / name)
        assert proc.returncode == 0, proc.stderr
    return root


# -- exports: another network's export is not replaced without --force ---------------------------------
def test_export_over_another_networks_export_needs_force(runs, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", runs / "cull", "--out", out, "--no-onnx").returncode == 0
    before = snapshot(out)
    proc = run_cli("export", runs / "thin", "--out", out, "--no-onnx")
    assert_one_line_error(proc, "holds the export of another network", "--force")
    assert proc.returncode == 2 and snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    forced = run_cli("export", runs / "thin", "--out", out, "--no-onnx", "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_export(out).relucut_recipe.plan.meta.get("thin") == ["s2"]


def test_exporting_the_same_network_again_replaces_it(runs, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", runs / "cull", "--out", out, "--no-onnx").returncode == 0
    again = run_cli("export", runs / "cull", "--out", out)  # now with model.onnx: the same network
    assert again.returncode == 0, again.stderr
    assert (out / "model.onnx").is_file() and export_intact(out, need=["model.onnx"])


def test_force_never_replaces_a_folder_that_is_not_an_export(runs, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = run_cli("export", runs / "cull", "--out", out, "--force", "--no-onnx")
    assert_one_line_error(proc, "is not a relucut export")
    assert snapshot(out) == {"notes.txt": b"keep me"}


def test_a_damaged_recipe_in_out_needs_force(runs, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", runs / "cull", "--out", out, "--no-onnx").returncode == 0
    (out / "recipe.json").write_text("{trunc")
    refused = run_cli("export", runs / "cull", "--out", out, "--no-onnx")
    assert_one_line_error(refused, "damaged export", "--force")
    assert run_cli("export", runs / "cull", "--out", out, "--no-onnx", "--force").returncode == 0


# -- runs: train and the methods do not write into an export or another command's folder --------------
def test_train_into_an_export_is_refused(runs, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", runs / "cull", "--out", out, "--no-onnx").returncode == 0
    before = snapshot(out)
    proc = run_cli("train", "resnet6", *TINY, "--epochs", "1", "-q", "--out", out)
    assert_one_line_error(proc, "holds an export (recipe.json), not a run", "another --out")
    assert snapshot(out) == before and not (out / ".lock").exists()


def test_train_into_a_deepreduce_search_is_refused(tmp_path):
    out = tmp_path / "dr"
    out.mkdir()
    (out / "search.json").write_text(json.dumps({"format": "relucut.deepreduce.search", "version": 1}))
    proc = run_cli("train", "resnet6", *TINY, "--epochs", "1", "-q", "--out", out)
    assert_one_line_error(proc, "holds a DeepReDuce search (search.json)")
    assert sorted(p.name for p in out.iterdir()) == ["search.json"]


def test_a_folder_of_another_kind_of_run_is_refused(tmp_path):
    from relucut.rundir import claim

    out = tmp_path / "run"
    with claim(out, {"method": "snl", "budget": 300}):
        pass
    before = snapshot(out)
    with pytest.raises(RelucutError, match="holds a snl run, not a senet run"):
        claim(out, {"method": "senet", "budget": 300})
    with pytest.raises(RelucutError, match="holds a snl run, not a training run"):
        claim(out, {"epochs": 3})
    assert snapshot(out) == before


# -- plans and checkpoints are used only on what they were made for ------------------------------------
def test_a_plan_made_for_resnet18_is_refused_on_resnet20(tmp_path):
    plan = tmp_path / "plan.json"
    made = run_cli("plan", "resnet18", "--cull", "s1", "--out", plan)
    assert made.returncode == 0, made.stderr
    for command in (["count", "resnet20"], ["pi", "estimate", "resnet20"],
                    ["train", "resnet20", "--dataset", "digits", "--epochs", "1", "-q",
                     "--out", tmp_path / "r"],
                    ["export", "resnet20", "--out", tmp_path / "e", "--no-onnx"]):
        proc = run_cli(*command, "--plan", plan)
        assert_one_line_error(proc, "was made for resnet18, not resnet20", "relucut plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    assert run_cli("count", "resnet18", "--plan", plan).returncode == 0
    other_width = run_cli("count", "resnet18", "--base-width", "8", "--plan", plan)
    assert_one_line_error(other_width, "made for resnet18, not resnet18 (base_width=8)")


def test_a_plan_made_for_another_model_is_refused_from_python(tmp_path):
    from relucut.train import TrainConfig

    spec18 = ModelSpec("resnet18", 10, 1, 8, {"base_width": 4})
    plan = ReLUPlan(meta={"model": spec18.to_dict()}).drop("stem_relu")
    with pytest.raises(RelucutError, match="made for resnet18"):
        export_model(ModelSpec("resnet20", 10, 1, 8), plan, None, tmp_path / "e", onnx=False)
    with pytest.raises(RelucutError, match="made for resnet18"):
        TrainConfig(model=ModelSpec("resnet20", 10, 1, 8), dataset="digits", plan=plan).resolved()
    assert not (tmp_path / "e").exists()


def test_export_checkpoint_with_a_plan_other_than_its_own_is_refused(runs, tmp_path):
    plan = tmp_path / "other.json"
    assert run_cli("plan", "resnet6", *TINY, "--thin", "s2", "--out", plan).returncode == 0
    proc = run_cli("export", "resnet6", *TINY, "--plan", plan, "--checkpoint", runs / "cull" / "best.pt",
                   "--out", tmp_path / "e", "--no-onnx")
    assert_one_line_error(proc, "was trained under another plan", "relucut export RUN_DIR")
    assert not (tmp_path / "e").exists()
    own = run_cli("export", "resnet6", *TINY, "--cull", "s1", "--checkpoint", runs / "cull" / "best.pt",
                  "--out", tmp_path / "e", "--no-onnx")
    assert own.returncode == 0, own.stderr
    other_model = run_cli("export", "resnet6", "--dataset", "digits", "--base-width", "8", "--cull", "s1",
                          "--checkpoint", runs / "cull" / "best.pt", "--out", tmp_path / "e2", "--no-onnx")
    assert_one_line_error(other_model, "was trained as resnet6")


# -- quantities need their unit ------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--rtt", "10"), ("--bandwidth", "100"), ("--rtt", "0.3")])
def test_a_quantity_without_its_unit_is_refused(option, value):
    proc = run_cli("pi", "estimate", "resnet18", option, value)
    assert_one_line_error(proc, option, "with a unit", f"got '{value}'")


def test_quantities_with_units_still_parse():
    proc = run_cli("pi", "estimate", "resnet18", "--rtt", "10ms", "--bandwidth", "100mbit", "--json")
    assert proc.returncode == 0, proc.stderr
    est = json.loads(proc.stdout)
    assert est["rtt_s"] == pytest.approx(0.01) and est["bandwidth_bps"] == pytest.approx(1e8)


# -- a damaged export is detected by its recorded hashes -----------------------------------------------
@pytest.fixture
def export_dir(tmp_path):
    out = tmp_path / "exp"
    export_model(ModelSpec("resnet6", 10, 1, 8, {"base_width": 4}), ReLUPlan().drop("stem_relu"), None, out)
    return out


def test_an_export_records_the_hash_of_each_file(export_dir):
    import hashlib

    files = json.loads((export_dir / "recipe.json").read_text())["files"]
    assert set(files) == {"model.pt", "model.onnx"}
    for name, digest in files.items():
        assert digest == "sha256:" + hashlib.sha256((export_dir / name).read_bytes()).hexdigest()
    assert verify_export(export_dir, need=["model.onnx"]) == []


@pytest.mark.parametrize("damage, needle", [
    ("truncate onnx", "model.onnx differs"), ("empty onnx", "model.onnx differs"),
    ("delete onnx", "model.onnx is missing"), ("flip a weight byte", "model.pt differs"),
])
def test_a_damaged_export_is_found_and_refused(export_dir, damage, needle):
    onnx, weights = export_dir / "model.onnx", export_dir / "model.pt"
    if damage == "truncate onnx":
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    elif damage == "empty onnx":
        onnx.write_bytes(b"")
    elif damage == "delete onnx":
        onnx.unlink()
    else:
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
    problems = verify_export(export_dir)
    assert len(problems) == 1 and needle in problems[0] and not export_intact(export_dir)
    assert_one_line_error(run_cli("count", export_dir), "damaged export", needle, "export it again")
    with pytest.raises(RelucutError, match="damaged export"):
        load_export(export_dir)


def test_an_export_without_hashes_still_loads_but_is_not_intact(export_dir):
    """Exports written before hashes were recorded: loaded as before, never reused as intact."""
    recipe = json.loads((export_dir / "recipe.json").read_text())
    del recipe["files"]
    (export_dir / "recipe.json").write_text(json.dumps(recipe))
    assert load_export(export_dir)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert "records no file hashes" in verify_export(export_dir)[0]
    assert not export_intact(export_dir)


def test_verify_export_needs_the_files_asked_for(tmp_path):
    out = tmp_path / "exp"
    export_model(ModelSpec("resnet6", 10, 1, 8, {"base_width": 4}), ReLUPlan(), None, out, onnx=False)
    assert export_intact(out) and not export_intact(out, need=["model.onnx"])
    assert verify_export(tmp_path / "nothing") == [f"no recipe.json in '{tmp_path / 'nothing'}'"]


def test_verify_export_imports_nothing_the_recipe_names(export_dir, tmp_path):
    recipe = json.loads((export_dir / "recipe.json").read_text())
    recipe["model"] = {"name": "os:system", "kwargs": {"command": f"touch {tmp_path / 'PWNED'}"}}
    (export_dir / "recipe.json").write_text(json.dumps(recipe))
    assert verify_export(export_dir) == [] and not (tmp_path / "PWNED").exists()


# -- item 8: the fast subset passes without the SPU environment ---------------------------------------------
def test_the_tests_that_need_spu_are_marked_spu():
    """Every test that calls the SPU runner (plain_outputs, measure) carries the spu mark."""
    import ast

    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = "pytest.mark.spu" in path.read_text().split("\ndef ", 1)[0]
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                         for n in ast.walk(node) if isinstance(n, ast.Call)}
                marks = {ast.unparse(d) for d in node.decorator_list}
                if calls & {"plain_outputs", "measure", "measure_many", "spu_python"}:
                    where = f"{path.name}::{node.name}"
                    assert module_marked or "pytest.mark.spu" in marks, f"{where} needs @pytest.mark.spu"


def test_a_finished_method_run_with_a_damaged_export_exports_it_again(tmp_path):
    """relucut snl/senet reuse a finished run only while its export matches its recorded hashes."""
    from fixtures.finegrained import BASE, SPEC, tiny_data, trained_base

    from relucut.finegrained.pipeline import run_snl
    from relucut.methods.snl import SNLConfig

    data = tiny_data()
    teacher = trained_base(data)
    cfg = SNLConfig(budget=1000, search_epochs=1, finetune_epochs=1)
    first = run_snl(SPEC, data, tmp_path, cfg, base=BASE, teacher=teacher, progress=False)
    onnx = tmp_path / "export" / "model.onnx"
    intact = onnx.read_bytes()
    onnx.write_bytes(intact[:100])
    again = run_snl(SPEC, data, tmp_path, cfg, base=BASE, teacher=teacher, progress=False)
    assert export_intact(tmp_path / "export", need=["model.onnx"]) and onnx.read_bytes() == intact
    assert again["result"] == first["result"]
