"""`relucut demo`: DeepReDuce end to end on the embedded digits data (one epoch per network here)."""

import json

from conftest import run_cli


def test_demo_prints_the_frontier_and_writes_the_plot(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--epochs", "1", "--out", out, check=True)
    assert "Order, least to most critical:" in proc.stdout
    assert "Pareto frontier" in proc.stdout and "#ReLU" in proc.stdout
    doc = json.loads((out / "frontier.json").read_text())
    assert len(doc["candidates"]) == 18  # 3 culling iterations x 5, plus 3 one-block networks
    assert doc["model"]["name"] == "resnet18" and doc["dataset"] == "digits"
    for r in doc["frontier"]:  # every frontier row is printed with its ReLU count
        assert f"{r['relus']:,}" in proc.stdout
    png = (out / "pareto.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
    settings = json.loads((out / "search.json").read_text())
    assert settings["dataset"] == "digits" and settings["train"]["epochs"] == 1
