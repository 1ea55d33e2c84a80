"""The experiment scripts: each ``--smoke`` mode end to end, plus hand-computed unit checks of the
ground-truth scoring, the aggregation and the token estimate they rely on."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import compare, drift, propagation_truth, sensitivity  # noqa: E402
from experiments.costs import TextSizes, estimate_tokens_total, tokens_per_operation  # noqa: E402
from experiments.tables import aggregate, paired_lift, pm  # noqa: E402
from experiments.truth import (  # noqa: E402
    Trace,
    World,
    drift_reach,
    multicasts,
    precision_recall,
)

RANKING = ("ndcg@1", "ndcg@5", "ndcg@10", "hr@1", "hr@5", "hr@10", "mrr")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_ranking(row: dict[str, str]) -> None:
    values = {m: float(row[m]) for m in RANKING}
    assert all(0.0 <= v <= 1.0 for v in values.values()), row
    assert values["ndcg@1"] <= values["ndcg@5"] <= values["ndcg@10"]
    assert values["hr@1"] <= values["hr@5"] <= values["hr@10"]
    for k in (1, 5, 10):
        assert values[f"ndcg@{k}"] <= values[f"hr@{k}"] + 1e-12
    assert values["hr@1"] == pytest.approx(values["ndcg@1"])


def test_compare_smoke(tmp_path: Path) -> None:
    out = compare.main(["--smoke", "--workers", "1", "--out", str(tmp_path)])
    assert out == tmp_path
    for name in ("table.md", "summary.csv", "runs.csv", "ndcg.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    runs = rows(tmp_path / "runs.csv")
    found = {(r["dataset"], r["model"]): r for r in runs}
    expected = [
        (dataset, model)
        for dataset in ("synthetic-smoke", "ml-latest-small-smoke")
        for model in ("random", "popularity", "itemknn", "bprmf", "sasrec", "recnet-no-backward")
    ] + [("synthetic-smoke", "agentcf")]
    assert sorted(found) == sorted(expected)
    for key, r in found.items():
        if key[1] == "sasrec" and r["status"] != "ok":
            assert r["status"] == "not available" and "no SASRec scorer" in r["note"]
            continue
        assert r["status"] == "ok", r
        check_ranking(r)
        if key[1] in ("recnet-no-backward", "agentcf"):
            # every training interaction costs at least one predict and one reflect
            assert float(r["train_ops_per_inter"]) >= 2.0
            assert float(r["ops_per_inter"]) >= float(r["train_ops_per_inter"])
            # with an LLM brain: one choice per interaction at least (reflections are fused
            # and follow wrong choices only, recnet.brain.call_plan)
            assert float(r["llm_calls_per_inter"]) >= 1.0
            assert float(r["tokens_per_inter"]) > 100 * float(r["llm_calls_per_inter"])
            assert float(r["tokens_measured_per_inter"]) > 100 * float(r["train_ops_per_inter"])
            assert r["candidates_identical"] == "True"
    # propagation costs operations that AgentCF-style runs do not make
    assert float(found[("synthetic-smoke", "recnet-no-backward")]["op_merge"]) > 0
    assert not found[("synthetic-smoke", "agentcf")].get("op_merge")
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert "## synthetic-smoke" in table and "## ml-latest-small-smoke" in table
    assert "lift over AgentCF-style" in table and "Filter decisions" in table
    for model in ("recnet-no-backward", "agentcf"):
        check_ranking({m: found[("synthetic-smoke", model)][f"preq_{m}"] for m in RANKING})
    assert "Where RecNet stands" in table and "BPR-MF" in table
    summary = rows(tmp_path / "summary.csv")
    assert len(summary) == len(expected)
    # the tables can be re-rendered from runs.csv alone, with the same numbers
    compare.main(["--from-runs", str(tmp_path)])
    assert "re-rendered from runs.csv" in (tmp_path / "table.md").read_text(encoding="utf-8")
    again = rows(tmp_path / "summary.csv")
    assert [(r["model"], r["ndcg@10_mean"]) for r in again] == [
        (r["model"], r["ndcg@10_mean"]) for r in summary
    ]


def test_compare_runs_a_recbole_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(12):
        lines += [f"u{u}\ti{(u * 7 + 3 * t) % 30}\t{1000 + 10 * t + u}" for t in range(6)]
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = ["item_id:token\ttitle:token_seq\tcategories:token_seq"]
    items += [f"i{i}\tAlbum {i}\t{('Pop', 'Rock', 'Jazz')[i % 3]}" for i in range(30)]
    (folder / "tiny.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    compare.main(["--datasets", "--recbole", str(folder), "--variants", "agentcf",
                  "--baselines", "popularity", "--seeds", "0", "--workers", "1",
                  "--set", "evaluation.n_negatives=9", "--out", str(out)])  # fmt: skip
    found = {r["model"]: r for r in rows(out / "runs.csv")}
    assert set(found) == {"agentcf", "popularity"}
    assert {r["dataset"] for r in found.values()} == {"recbole:tiny"}
    for r in found.values():
        assert r["status"] == "ok" and r["n_test_users"] == "12"
        check_ranking(r)
    assert found["agentcf"]["candidates_identical"] == "True"


def test_sensitivity_smoke(tmp_path: Path) -> None:
    sensitivity.main(["--smoke", "--workers", "1", "--out", str(tmp_path)])
    for name in ("sensitivity.md", "summary.csv", "runs.csv", "tau.png", "update_size.png",
                 "routers.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    summary = {(r["sweep"], float(r["value"])): r for r in rows(tmp_path / "summary.csv")}
    expected = {("reference", 0.0)} | {
        (s.name, float(v)) for s in sensitivity.SMOKE_SWEEPS for v in s.values
    }
    assert set(summary) == expected
    for r in summary.values():
        assert r["status"] == "ok" and r["n"] == "1"
        assert 0.0 <= float(r["ndcg@10_mean"]) <= 1.0
        assert 0.0 <= float(r["recipient_share_mean"]) <= 1.0
    # a higher threshold reaches fewer clients; propagation off reaches nobody
    assert float(summary[("tau-paper", 0.9)]["recipient_share_mean"]) < float(
        summary[("tau-paper", 0.7)]["recipient_share_mean"]
    )
    assert float(summary[("reference", 0.0)]["recipient_share_mean"]) == 0.0
    # Updatesize sets the number of steps
    assert float(summary[("update_size", 100.0)]["n_steps_mean"]) < float(
        summary[("update_size", 50.0)]["n_steps_mean"]
    )


def test_propagation_truth_smoke(tmp_path: Path) -> None:
    propagation_truth.main(["--smoke", "--workers", "1", "--out", str(tmp_path)])
    for name in ("propagation_truth.md", "multicast.csv", "drifts.csv", "reach.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    casts = {r["model"]: r for r in rows(tmp_path / "multicast.csv")}
    assert set(casts) == set(propagation_truth.VARIANTS)
    for r in casts.values():
        assert r["status"] == "ok"
        for column in ("precision", "recall", "user_precision", "chance_precision"):
            assert 0.0 <= float(r[column]) <= 1.0, (column, r[column])
        assert int(r["multicasts"]) > 0
    routers = casts["recnet-no-backward"]
    assert float(routers["precision"]) > float(routers["chance_precision"])
    drifts = rows(tmp_path / "drifts.csv")
    assert {r["model"] for r in drifts} == set(propagation_truth.VARIANTS)
    for r in drifts:
        for column in ("reached_before", "reached_after", "reached_ever", "ahead_of_own_choice"):
            assert 0.0 <= float(r[column]) <= 1.0
        assert float(r["reached_after"]) <= float(r["reached_ever"]) + 1e-12
    assert not list((tmp_path / "traces").glob("*.sqlite"))  # traces are removed after scoring


def tiny_world() -> tuple[World, Trace]:
    """Two communities; community 0 starts preferring community 1's items at t=150."""
    world = World(
        user_comm={"u:a": 0, "u:b": 0, "u:c": 1},
        item_comm={"i:x": 0, "i:y": 1},
        attr_comm={"red": 0, "blue": 1},
        title_comm={"item x": 0, "item y": 1},
        changes={0: [(150, 1)]},
        drifts=[(150, 0, 1)],
    )
    trace = Trace(
        step_last_ts={0: 100, 1: 200},
        interactions={0: [("u:a", "i:x", 50)], 1: [("u:b", "i:y", 160), ("u:c", "i:y", 170)]},
        profiles={
            ("r:0", 0): {"genre:red": 1.0, "genre:blue": 0.1},
            ("r:1", 1): {"genre:blue": 0.8, "tag:red": 0.2},
        },
        previous={("r:0", 0): {"genre:blue": 0.1}, ("r:1", 1): {"genre:blue": 0.2}},
        recipients={("r:0", 0): {"u:a", "u:c", "i:x"}, ("r:1", 1): {"u:a", "u:b"}},
        accepted={("r:0", 0): {"u:a"}, ("r:1", 1): {"u:a", "u:b"}},
        clients={"u:a", "u:b", "u:c", "i:x", "i:y"},
    )
    return world, trace


def test_truth_scoring_by_hand() -> None:
    world, trace = tiny_world()
    casts = multicasts(trace, world, carry_share=0.3)
    first, second = casts
    # r:0 gained "red" (community 0), caused by u:a choosing i:x in taste
    assert (first.topic, first.purity, first.carries) == (0, 1.0, {0})
    assert first.should == {"u:a", "u:b", "i:x"}
    # r:1 gained blue 0.6 (community 1) and red 0.2 (community 0): topic 1, purity 0.75; causes
    # are u:b (community 0, drifted to 1 at t=150) and u:c (community 1)
    assert (second.topic, second.carries) == (1, {1})
    assert second.purity == pytest.approx(0.75)
    assert second.should == {"u:a", "u:b", "u:c", "i:y"}
    scores = precision_recall(casts, len(trace.clients))
    assert scores["precision"] == pytest.approx(4 / 5)
    assert scores["recall"] == pytest.approx(4 / 7)
    assert scores["user_precision"] == pytest.approx(3 / 4)
    assert scores["user_recall"] == pytest.approx(3 / 5)
    assert scores["accepted_precision"] == pytest.approx(3 / 3)
    assert scores["chance_precision"] == pytest.approx(7 / 10)
    assert scores["topic_purity"] == pytest.approx(0.875)

    (drift,), (curve,) = drift_reach(casts, trace, world, window=1)
    assert drift["drift_step"] == 1 and drift["users"] == 2
    assert (drift["reached_before"], drift["reached_after"]) == (0.0, 1.0)
    assert drift["median_delay_steps"] == 0.0 and drift["steps_to_half"] == 0.0
    assert drift["median_delay_days"] == pytest.approx(50 / 86_400)
    assert drift["ahead_of_own_choice"] == 0.5  # u:b chose a new item in the same step
    assert curve.tolist() == [0.0, 1.0]


def test_point_to_point_sender_is_its_own_cause() -> None:
    world, trace = tiny_world()
    trace.profiles, trace.previous = {}, {}
    trace.recipients = {("u:b", 1): {"u:a", "u:c"}}
    trace.accepted = {}
    (cast,) = multicasts(trace, world)
    # at step 1 (t=200) u:b's community 0 prefers community 1
    assert (cast.topic, cast.carries) == (1, {1})
    assert cast.should == {"u:a", "u:b", "i:y"}
    assert precision_recall([cast], 5)["precision"] == pytest.approx(1 / 2)
    # with recorded profiles, the content decides: u:b gained a little blue (community 1) but its
    # profile is still mostly red, so the message does not carry community 1 yet
    trace.client_profiles = {
        "u:b": [(0, {"genre:red": 1.0}), (1, {"genre:red": 1.0, "tag:blue": 0.2})]
    }
    (cast,) = multicasts(trace, world, carry_share=0.3)
    assert (cast.topic, cast.purity, cast.carries) == (1, 1.0, {0})
    assert cast.should == {"u:a", "u:b", "i:y"}


def test_aggregate_mean_and_sample_std() -> None:
    records = [
        {"model": "a", "seed": s, "status": "ok", "x": v} for s, v in enumerate([1.0, 2.0, 3.0])
    ] + [{"model": "b", "seed": 0, "status": "not available", "note": "why"}]
    a, b = aggregate(records, ("model",), ("x",))
    assert (a["n"], a["x_mean"], a["x_std"]) == (3, 2.0, 1.0)
    assert pm(a, "x", 2) == "2.00 ± 1.00"
    assert b["n"] == 0 and b["status"] == "not available" and b["note"] == "why"
    assert math.isnan(b["x_mean"]) and pm(b, "x") == "–"


def test_token_estimate_grows_with_profiles_and_flags_unknown_operations() -> None:
    short = tokens_per_operation(TextSizes(user_profile=100, item_profile=100, n_candidates=10))
    long = tokens_per_operation(TextSizes(user_profile=800, item_profile=800, n_candidates=20))
    assert {"reflect_user", "merge", "rank", "gradient", "optimize"} <= set(short)
    assert all(long[op] > short[op] for op in ("reflect_user", "rank", "predict"))
    total, unpriced = estimate_tokens_total({"rank": 2, "teleport": 5}, short)
    assert total == 2 * short["rank"] and unpriced == ["teleport"]


def test_no_op_variants_are_flagged_and_candidates_checked() -> None:
    metrics = dict.fromkeys(RANKING, 0.5)
    base = {"dataset": "d", "seed": 0, "status": "ok", "op_merge": 3, **metrics}
    records = [
        {**base, "model": "recnet-no-backward", "note": ""},
        {**base, "model": "top-k-routing", "note": ""},
        {**base, "model": "agentcf", "note": "", "ndcg@10": 0.4},
        {**base, "model": "popularity", "note": ""},
    ]
    for r in records[:3]:
        r.update({f"inner_{m}": 0.5 for m in RANKING})
    records[1]["inner_mrr"] = 0.25  # this run saw other candidate lists
    compare.flag_no_ops(records)
    assert "changed nothing" in records[1]["note"] and records[2]["note"] == ""
    problems = compare.check_candidates(records)
    assert problems == ["d seed 0 top-k-routing: popularity differs"]
    assert records[0]["candidates_identical"] and not records[1]["candidates_identical"]


def test_paired_lift_by_hand() -> None:
    records = [
        {"model": "a", "seed": s, "status": "ok", "x": v} for s, v in enumerate([0.5, 0.6, 0.7])
    ] + [{"model": "b", "seed": s, "status": "ok", "x": v} for s, v in enumerate([0.4, 0.4, 0.6])]
    mean, low, high, n = paired_lift(records, "a", "b", "x")
    # differences 0.1, 0.2, 0.1: mean 0.1333, sd 0.0577, t(0.975, 2) = 4.3027
    assert n == 3 and mean == pytest.approx(0.4 / 3)
    half = 4.302653 * 0.057735 / math.sqrt(3)
    assert low == pytest.approx(mean - half, abs=1e-5) and high == pytest.approx(
        mean + half, abs=1e-5
    )
    assert paired_lift(records[:1] + records[3:4], "a", "b", "x")[3] == 1


def test_drift_smoke(tmp_path: Path) -> None:
    report = drift.main(["--smoke", "--workers", "1", "--out", str(tmp_path)])
    text = report.read_text(encoding="utf-8")
    assert "Oracle" in text and "AgentCF-style" in text
    found = {r["model"]: r for r in rows(tmp_path / "runs.csv")}
    assert set(found) == {"agentcf", "recnet-no-backward", "oracle"}
    oracle = float(found["oracle"]["preq_ndcg@10"])
    for model in ("agentcf", "recnet-no-backward"):
        assert 0.0 < float(found[model]["preq_ndcg@10"]) < oracle  # the oracle is the upper bound
    assert rows(tmp_path / "drifts.csv")


def test_drift_reports_the_validation_gate_paired() -> None:
    def record(model: str, seed: int, final: float, rolled_back: int) -> dict:
        return {
            "model": model,
            "seed": seed,
            "status": "ok",
            "ndcg@10": final,
            "preq_ndcg@10": 0.5,
            "optimizations_rolled_back": rolled_back,
        }

    records = [
        *(record("recnet-full", s, 0.60 + 0.01 * s, r) for s, r in ((0, 6), (1, 0), (2, 4))),
        *(record("recnet-no-gate", s, 0.59 + 0.01 * s, 0) for s in (0, 1, 2)),
    ]
    (line, _) = drift.gate_lines(records)
    assert "rolled back 6 / 0 / 4 optimisations" in line
    assert "prequential +0.0000" in line and "final +0.0100" in line
    assert drift.gate_lines([r for r in records if r["model"] == "recnet-full"]) == []
