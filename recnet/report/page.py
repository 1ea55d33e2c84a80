"""The HTML page of ``recnet report``: one self-contained file (inline CSS and SVG, no script).

Pipeline position: the last step of the report: ``RunData`` (``recnet.report.data``) and chart
SVGs (``recnet.report.charts``) in, one HTML string out. Sections carry ids (``run``,
``metrics``, ``propagation``, ``routers``, ``llm``, ``agent``) and every chart is a
``figure.chart``; a chart with nothing to draw is replaced by a ``p.empty`` line saying why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from recnet.report import charts
from recnet.report import story as story_charts
from recnet.report.data import Lineage, RunData
from recnet.report.graph import graph_chart
from recnet.report.story import AgentStory

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2327;
background:#f6f7f9}
header{background:#263238;color:#eceff1;padding:14px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b0bec5}
nav{padding:6px 28px;background:#37474f}nav a{color:#cfd8dc;margin-right:16px;
text-decoration:none;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #dde1e5;border-radius:6px;margin:18px 0;
padding:4px 20px 16px}
h2{font-size:17px;border-bottom:1px solid #eceff1;padding-bottom:6px}h3{font-size:14px;
margin:18px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}td,th{padding:3px 9px;
border-bottom:1px solid #eceff1;text-align:left;vertical-align:top}
th{background:#f1f3f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure.chart{margin:10px 0}figure.chart svg{max-width:100%;height:auto}
figcaption{font-size:12px;color:#546e7a}
p.empty{color:#78909c;font-style:italic}.status-finished{color:#2e7d32}
.status-running{color:#ef6c00}.status-failed{color:#c62828}.status-stopped{color:#6a1b9a}
.kv td:first-child{color:#546e7a}pre{white-space:pre-wrap;font-size:11.5px;background:#f6f7f9;
padding:8px;max-height:360px;overflow:auto}.text{max-width:560px}
"""


def render(runs: Sequence[RunData]) -> str:
    """The whole page for one run, or several overlaid (comparison mode)."""
    first = runs[0]
    title = (
        f"recnet report: {first.run['name']}"
        if len(runs) == 1
        else "recnet comparison: " + " vs ".join(r.label for r in runs)
    )
    sections = [
        run_section(runs),
        metrics_section(runs),
        propagation_section(runs),
        routers_section(runs),
        llm_section(runs),
    ]
    stories = [r.story for r in runs if r.story is not None]
    if stories:
        sections.append(agent_section(stories[0]))
    links = "".join(
        f'<a href="#{sid}">{name}</a>'
        for sid, name in (
            ("run", "Run"),
            ("metrics", "Metrics over time"),
            ("propagation", "Propagation"),
            ("routers", "Routers"),
            ("llm", "LLM"),
            *([("agent", "Agent")] if stories else []),
        )
    )
    subtitle = " · ".join(f"{escape(str(r.path))} ({escape(r.run_id)})" for r in runs)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{subtitle}</p></header><nav>{links}</nav>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


# -- building blocks -----------------------------------------------------------------------------


def figure(name: str, svg: str | None, caption: str, empty: str) -> str:
    if svg is None:
        return f'<p class="empty" data-empty="{name}">{escape(empty)}</p>'
    return (
        f'<figure class="chart" data-chart="{name}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    head_row = f"<tr>{head}</tr>" if any(header) else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{head_row}{body}</table>'


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{'' if value is None else escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    text = str(value)
    short = text if len(text) <= 300 else text[:299] + "…"
    return f'<td class="text">{escape(short)}</td>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def duration(run: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(run["started_at"])
        end = datetime.fromisoformat(run["finished_at"]) if run["finished_at"] else None
    except (TypeError, ValueError):
        return ""
    if end is None:
        return "still running (or killed)"
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def prefixed(runs: Sequence[RunData], run: RunData, title: str) -> str:
    return f"<h3>{escape(run.label)}: {escape(title)}</h3>" if len(runs) > 1 else ""


# -- sections ------------------------------------------------------------------------------------


def run_section(runs: Sequence[RunData]) -> str:
    facts = [
        "run id",
        "trace",
        "scenario",
        "seed",
        "dataset",
        "brain",
        "status",
        "steps done",
        "started",
        "duration",
        "versions",
        "note",
    ]
    columns = []
    for r in runs:
        run = r.run
        last = int(run["last_completed_step"])
        status = run["status"]
        if status != "finished":
            status += " (stopped early: the report shows the committed steps)"
        columns.append(
            [
                r.run_id,
                str(r.path),
                run["name"],
                run["seed"],
                run["dataset_source"] or "",
                run["brain"],
                status,
                last + 1,
                run["started_at"],
                duration(run),
                ", ".join(f"{k} {v}" for k, v in r.versions.items()),
                run["note"] or "",
            ]
        )
    header = ["", *(r.label or "run" for r in runs)] if len(runs) > 1 else ["", ""]
    body = table(
        header, ([fact, *(str(c[i]) for c in columns)] for i, fact in enumerate(facts)), "kv"
    )
    body += "<h3>Test metrics beside the baselines (same candidates)</h3>"
    body += metrics_table(runs)
    for r in runs:
        settings = {
            key: r.scenario.get(key)
            for key in ("dataset", "world", "propagation", "backward", "evaluation", "llm")
        }
        body += (
            f"<details><summary>{escape(r.label or 'scenario')} scenario (validated, defaults "
            f"filled in)</summary><pre>{escape(json.dumps(settings, indent=1))}</pre></details>"
        )
    for r in runs:
        for note in r.notes:
            body += f'<p class="empty">{escape(note)}</p>'
    return section("run", "Run", body)


def metrics_table(runs: Sequence[RunData]) -> str:
    metric_names: list[str] = []
    rows = []
    for r in runs:
        for summary in r.metrics.values():
            metric_names += [m for m in summary if m not in metric_names]
    for r in runs:
        for model, summary in r.metrics.items():
            name = f"{r.label}: {model}" if len(runs) > 1 else model
            rows.append([name, *(summary.get(m) for m in metric_names)])
    if not rows:
        return (
            '<p class="empty" data-empty="test-metrics">no test metrics yet: the run has not '
            "reached its evaluation (stopped early or still running)</p>"
        )
    return table(["model", *metric_names], rows)


def metrics_section(runs: Sequence[RunData]) -> str:
    body = ""
    prequential = charts.prequential_chart(runs)
    if prequential is not None:
        body += figure(
            "prequential",
            prequential,
            "Prequential (test-then-train): each training interaction's true item ranked "
            "among sampled negatives before it is learned; trailing mean over steps.",
            "",
        )
    body += figure(
        "accuracy",
        charts.accuracy_chart(runs),
        "Training choice accuracy per step: the user agent picked the item really chosen "
        "over a sampled negative (trailing mean); dashed = backward-phase top-1 feedback.",
        "no committed steps yet",
    )
    if prequential is None:
        body += (
            '<p class="empty">this trace has no prequential table (recorded by newer '
            "recnet versions); training choice accuracy is shown instead.</p>"
        )
    return section("metrics", "Metrics over time", body)


def propagation_section(runs: Sequence[RunData]) -> str:
    rows = []
    for r in runs:
        s, reach = r.steps, r.reach
        sent = int(s.n_messages.sum())
        rows.append(
            [
                r.label or r.run["name"],
                sent,
                int(s.n_accepted.sum()),
                int(s.n_rejected.sum()),
                int(s.n_dropped.sum()),
                len(r.multicast_sizes),
                share(len(reach["user_first_message"]), reach["n_user"]),
                share(len(reach["item_first_message"]), reach["n_item"]),
                share(len(reach["user_first_accepted"]), reach["n_user"]),
            ]
        )
    body = table(
        [
            "run",
            "sent",
            "accepted",
            "rejected",
            "dropped",
            "multicasts",
            "users reached",
            "items reached",
            "users accepted one",
        ],
        rows,
    )
    body += figure(
        "messages",
        charts.messages_chart(runs),
        "Router messages sent per step and their fates (decided when a buffer flushed).",
        "no messages were recorded",
    )
    for r in runs:
        body += prefixed(runs, r, "per filter rule")
        body += figure(
            "rules",
            charts.rules_chart(r),
            "Message fates per filter rule or buffer policy that decided them.",
            "no messages were recorded",
        )
        rules_seen = sorted({rule for rule, _, _ in r.rule_fates})
        texts = [
            [rule, r.rule_texts.get(rule, "(buffer policy or merge: no filter rule decided)")]
            for rule in rules_seen
        ]
        if texts:
            body += table(["rule", "text (newest version)"], texts)
    body += figure(
        "multicast",
        charts.multicast_chart(runs),
        "Recipients per multicast (one router's message to its clients in one step).",
        "no multicasts were recorded",
    )
    body += figure(
        "reach",
        charts.reach_chart(runs),
        "Share of users (solid) and items (dotted) that had received a message by each step; "
        "thin = had accepted one.",
        "no messages were recorded",
    )
    return section("propagation", "Propagation", body)


def share(part: int, whole: int) -> str:
    return f"{part:,} / {whole:,} ({part / whole:.0%})" if whole else "0"


def routers_section(runs: Sequence[RunData]) -> str:
    body = ""
    for r in runs:
        body += prefixed(runs, r, "router–client graph")
        body += figure(
            "graph",
            graph_chart(r.graph, seed=int(r.run["seed"])),
            "Router–client graph from the newest checkpoint: routers (large circles, area = "
            "members) placed by shared members; users (dots) and items (triangles) coloured by "
            "their best router, edges = memberships.",
            "no readable checkpoint in this trace: the membership graph is not available",
        )
    body += figure(
        "router-count",
        charts.router_count_chart(runs),
        "Routers alive after each step; ▲ splits, ▼ merges (kept by the backward phase).",
        "no routers recorded",
    )
    for r in runs:
        body += prefixed(runs, r, "lineage")
        if r.router_events:
            events = r.router_events[:40]
            body += "<h3>Splits and merges</h3>" + table(
                ["step", "operation", "routers"], [list(e) for e in events]
            )
        body += validation_table(r)
        body += "<h3>Most changed routers (backward-phase changes first)</h3>" + lineage_tables(
            r.router_lineage, ["step", "version", "reason", "n_members", "tau", "text"]
        )
        body += "<h3>Most changed filter rules</h3>" + lineage_tables(
            r.rule_lineage, ["step", "version", "reason", "active", "executable_json", "text"]
        )
    return section("routers", "Routers", body)


def validation_table(run: RunData) -> str:
    """The backward phase's validation gate: kept / rolled back, batch by batch, and why."""
    v = run.validation
    if v is None:
        return ""
    whole = v.n_kept + v.n_rolled_back
    return (
        f"<h3>Backward validation: {share(v.n_rolled_back, whole)} optimisations rolled back"
        "</h3>" + table(["step", "batch", "edits", "modules", "status", "reason"], v.batches)
    )


def lineage_tables(lineage: Sequence[Lineage], columns: Sequence[str]) -> str:
    if not lineage:
        return '<p class="empty">none recorded</p>'
    parts = []
    for entry in lineage:
        shown = entry.versions[-12:]
        skipped = len(entry.versions) - len(shown)
        note = f" (newest 12 of {len(entry.versions)})" if skipped else ""
        parts.append(
            f"<details {'open' if not parts else ''}><summary>{escape(entry.key)}: "
            f"{len(entry.versions)} versions{note}</summary>"
            + table(columns, ([v.get(c) for c in columns] for v in shown))
            + "</details>"
        )
    return "".join(parts)


def llm_section(runs: Sequence[RunData]) -> str:
    if not any(r.llm_operations for r in runs):
        brains = ", ".join(sorted({str(r.run["brain"]) for r in runs}))
        return section(
            "llm",
            "LLM calls",
            f'<p class="empty" data-empty="llm">no LLM calls in this trace (brain: '
            f"{escape(brains)}); an LLM run shows calls, tokens, cost, latency, retries, "
            "repairs and fallbacks per operation and per step here.</p>",
        )
    body = ""
    columns = [
        "operation",
        "model",
        "calls",
        "cache_hits",
        "tokens_in",
        "tokens_out",
        "cost",
        "latency_ms",
        "retries",
        "repairs",
        "fallbacks",
        "unparsed",
    ]
    for r in runs:
        if not r.llm_operations:
            continue
        body += prefixed(runs, r, "per operation")
        rows = [[o.get(c) for c in columns] for o in r.llm_operations]
        costs = [o["cost"] for o in r.llm_operations if o["cost"] is not None]
        totals = [
            "total",
            "",
            sum(o["calls"] for o in r.llm_operations),
            sum(o["cache_hits"] or 0 for o in r.llm_operations),
            sum(o["tokens_in"] for o in r.llm_operations),
            sum(o["tokens_out"] for o in r.llm_operations),
            sum(costs) if costs else None,
            None,
            sum(o["retries"] or 0 for o in r.llm_operations),
            sum(o["repairs"] or 0 for o in r.llm_operations),
            sum(o["fallbacks"] or 0 for o in r.llm_operations),
            sum(o["unparsed"] or 0 for o in r.llm_operations),
        ]
        body += table(
            [c.replace("_", " ") for c in columns[:6]]
            + ["cost (USD)", "mean latency (ms, not cached)", *columns[8:]],
            [*rows, totals],
        )
        body += figure(
            "llm-operations",
            charts.llm_operations_chart(r),
            "Calls and tokens per operation.",
            "no LLM calls",
        )
    body += figure(
        "llm-steps",
        charts.llm_steps_chart(runs),
        "Calls (solid) and tokens (dotted) per step; retries, repairs and fallbacks per step.",
        "no LLM calls",
    )
    return section("llm", "LLM calls", body)


def agent_section(story: AgentStory) -> str:
    label = f" — {story.label}" if story.label else ""
    body = f"<p>{escape(story.kind)} <b>{escape(story.agent_id)}</b>{escape(label)}</p>"
    body += figure(
        "agent-messages",
        story_charts.fates_chart(story),
        "Fates of the messages it received, by the step they were decided.",
        "it received no router message",
    )
    body += figure(
        "agent-choices",
        story_charts.choices_chart(story),
        "Its running choice accuracy over its training interactions.",
        "it made no training choice",
    )
    body += f"<h3>Profile versions ({story.n_profiles})</h3>" + table(
        ["step", "kind", "reason", "text"],
        ([p["step"], p["kind"], p["reason"], p["text"]] for p in story.profiles),
    )
    body += f"<h3>Messages and their fates ({story.n_messages})</h3>" + table(
        ["sent step", "router", "score", "status", "rule", "decided step"],
        (
            [m["step"], m["router_id"], m["score"], m["status"], m["rule_id"], m["decided_step"]]
            for m in story.messages
        ),
    )
    body += f"<h3>Choices ({story.n_interactions})</h3>" + table(
        ["seq", "step", "user", "true item", "negative", "chosen", "correct"],
        (
            [
                i["seq"],
                i["step"],
                i["user_id"],
                i["item_id"],
                i["negative_id"],
                i["chosen_id"],
                "yes" if i["correct"] else "no",
            ]
            for i in story.interactions
        ),
    )
    return section("agent", f"Agent {story.agent_id}", body)
