"""The Pareto frontier: a true Pareto set, its tables, and budgets."""

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relucut import RelucutError
from relucut.deepreduce.candidates import Candidate
from relucut.deepreduce.frontier import best_under_budget, candidate_point, markdown_table, to_csv, write_frontier
from relucut.pareto import mark, pareto_indices


def mark_frontier(points):
    return mark(points, "relus")


def dominates(a, b):
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


points = st.lists(st.tuples(st.integers(1, 60), st.integers(0, 30).map(float)), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(points)
def test_frontier_is_exactly_the_undominated_points(pts):
    front = set(pareto_indices(pts))
    assert front  # a non-empty set always has an undominated point
    for i in front:  # nothing on the frontier is dominated by anything
        assert not any(dominates(p, pts[i]) for p in pts)
    for i in set(range(len(pts))) - front:  # everything off it is dominated by a frontier point
        assert any(dominates(pts[j], pts[i]) for j in front)


STAGES = ["stem", "s1", "s2", "s3", "s4"]


def result(name, relus, val, test=None, step="thinned", thinned=("s2", "s3"), latency=None, alpha=1.0, rho=1.0,
           blocks=None):
    cand = Candidate(1, step, ("stem", "s1"), tuple(thinned), alpha, rho, blocks)
    point = candidate_point(cand, relus, 10 * relus, 100, val, test, latency, stage_names=STAGES)
    point.name = name
    return point


def test_mark_frontier_orders_by_relus_and_flags():
    rs = [result("a", 1000, 0.90), result("b", 500, 0.91), result("c", 200, 0.80), result("d", 300, 0.79)]
    front = mark_frontier(rs)
    assert [r.name for r in front] == ["b", "c"]  # a costs more and is less accurate than b
    assert [r.on_frontier for r in rs] == [False, True, True, False]


def test_best_under_budget_and_its_error():
    rs = [result("big", 1000, 95.0), result("mid", 400, 90.0), result("mid2", 400, 92.0), result("small", 100, 70.0)]
    assert best_under_budget(rs, 500).name == "mid2"
    assert best_under_budget(rs, 100).name == "small"
    with pytest.raises(RelucutError, match="smallest reachable is 100 ReLUs"):
        best_under_budget(rs, 99)


def test_written_tables(tmp_path):
    rs = [result("a", 229_376, 0.7622, 0.75), result("b", 114_688, 0.7472, None), result("c", 300_000, 0.70, 0.69)]
    write_frontier(tmp_path, rs, {"title": "t"})
    doc = json.loads((tmp_path / "frontier.json").read_text())
    assert [r["name"] for r in doc["frontier"]] == ["a", "b"] and len(doc["candidates"]) == 3
    assert doc["version"] == 2 and doc["frontier"][0]["val_acc"] == 0.7622  # fractions in JSON
    assert doc["frontier"][0]["acc_per_krelu"] == pytest.approx(0.7622 / 229.376)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "frontier.csv").read_text())))
    assert [r["name"] for r in rows] == ["a", "b"] and rows[1]["test_acc"] == ""
    assert (rows[0]["val_acc"], rows[0]["test_acc"]) == ("0.7622", "0.75")  # and in CSV
    assert rows[0]["culled"] == "stem+s1" and rows[0]["thinned"] == "s2+s3"
    md = (tmp_path / "frontier.md").read_text()
    assert "| S1 | S2+S3 | NA | NA | 229.38K | 2.29M | 76.22 | 75.00 |" in md  # Table 4: stem not shown, %
    assert "| Val acc (%) | Test acc (%) |" in md and "| 0.332 |" in md  # 76.22 % / 229.376 kReLU
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "candidates.csv").read_text())))) == 3


def test_markdown_marks_reshaping_and_one_block():
    r = result("x", 7168, 0.623, alpha=0.5, rho=0.5, blocks=(1, 1, 1, 1))
    line = markdown_table([r]).splitlines()[-1]
    assert line.startswith("| S1 | S2*+S3* | 0.5x | 0.5x | 7.17K |")
    assert to_csv([r]).splitlines()[1].split(",")[3:6] == ["0.5", "0.5", "True"]


def timed(name, relus, val, latency):
    return result(name, relus, val, thinned=("s2",), latency=latency)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40).map(lambda v: v / 10), st.integers(0, 30).map(float)), min_size=1,
                max_size=20))
def test_latency_frontier_is_exactly_the_undominated_points(pts):
    from relucut.deepreduce.frontier import latency_frontier

    rs = [timed(str(i), 100, acc, lat) for i, (lat, acc) in enumerate(pts)]
    front = latency_frontier(rs)
    assert [r.online_s for r in front] == sorted(r.online_s for r in front)
    undominated = [r for r in rs
                   if not any(dominates((o.online_s, o.val_acc), (r.online_s, r.val_acc)) for o in rs)]
    assert {id(r) for r in front} == {id(r) for r in undominated}
    assert latency_frontier(rs + [timed("untimed", 1, 1.0, None)]) == front  # no estimate: left out


def test_plot_has_a_latency_panel_whose_frontier_can_differ_from_the_relu_one(tmp_path):
    from relucut.deepreduce.frontier import latency_frontier
    from relucut.deepreduce.plot import draw_frontier, plot_frontier

    # b has fewer ReLUs than a but more ReLU layers: slower, so only the ReLU frontier keeps it
    rs = [timed("a", 2048, 0.90, 0.11), timed("b", 1536, 0.88, 0.17), timed("c", 512, 0.80, 0.08)]
    mark_frontier(rs)
    assert [r.name for r in rs if r.on_frontier] == ["a", "b", "c"]
    assert [r.name for r in latency_frontier(rs)] == ["c", "a"]
    fig = draw_frontier(rs, "t", teacher=(4096, 0.95), teacher_latency_s=0.3)
    assert len(fig.axes) == 2 and "latency" in fig.axes[1].get_xlabel()
    assert all(ax.yaxis.get_major_formatter()(0.5, 0).startswith("50") for ax in fig.axes)  # fractions as %
    assert all(ax.yaxis.get_major_formatter()(0.5, 0).endswith("%") for ax in fig.axes)
    labels = [t.get_text() for t in fig.axes[1].texts]
    assert any(text.endswith("0.08s") for text in labels) and not any("0.17s" in text for text in labels)
    path = plot_frontier(rs, tmp_path / "p.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    untimed = [result("a", 1000, 0.90)]
    mark_frontier(untimed)
    single = draw_frontier(untimed)
    assert len(single.axes) == 1  # no estimates: the ReLU panel alone
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(single)


def test_criticality_stores_fractions_and_scores_eq1_on_percent():
    from relucut.deepreduce.criticality import CriticalityTable, StageCriticality, criticality_scores

    rows = [StageCriticality("s1", 311_300, 0.5945, 0.59), StageCriticality("s2", 147_500, 0.6797, 0.67)]
    table = CriticalityTable.build({"name": "m"}, "cifar100", rows, ["stem", "s1", "s2"],
                                   teacher={"relus": 500_000, "val_acc": 0.78, "test_acc": 0.77})
    expected = criticality_scores({"s1": 59.45, "s2": 67.97}, {"s1": 311_300, "s2": 147_500})
    assert {r.stage: r.score for r in table.stages} == pytest.approx(expected)
    data = table.to_dict()
    assert data["version"] == 2 and data["stages"][0]["val_acc_kd"] == 0.5945
    md = table.to_markdown()
    assert "| S1 | 311,300 | - | 59.45 | - | 59.00 |" in md and "| FR (teacher) | 500,000 | 78.00 |" in md
    old = {**data, "version": 1, "teacher": {**data["teacher"], "val_acc": 78.0, "test_acc": 77.0},
           "stages": [{**r, "val_acc_kd": 100 * r["val_acc_kd"], "test_acc_kd": 100 * r["test_acc_kd"]}
                      for r in data["stages"]]}
    loaded = CriticalityTable.from_dict(old)
    assert loaded.stages[1].val_acc_kd == pytest.approx(0.6797) and loaded.teacher["val_acc"] == pytest.approx(0.78)
    assert loaded.order == table.order and loaded.teacher["relus"] == 500_000
