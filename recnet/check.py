"""``recnet check SCENARIO``: probe the configured LLM server before spending anything on it.

Pipeline position: a preflight beside ``recnet simulate --dry-run``; it builds the scenario's
OpenAI-compatible backend (no cache, one attempt per request) and sends a few tiny requests:

1. *reachable / model served* — ``GET /models`` and whether ``llm.model`` is listed (a server
   without ``/models`` is not an error: the probes below show whether the model answers);
2. *structured output* — one request with a ``json_schema`` response format whose answer must
   carry a token only the schema names: honoured, rejected (a 400: ``auto`` switches to JSON in
   text after the first request; ``json_text`` skips it) or **silently ignored** (a 200 whose
   answer does not follow the schema: set ``llm.structured_output: json_text`` so the schema
   travels in the prompt — the probe is then repeated that way to show it works);
3. *one tiny request per operation* the run will make (fused, batched or single, as ``llm.*``
   sets them), through ``call_structured`` like a real call: parsed and valid or not, latency,
   tokens;
4. *cost* — the dry run's estimate of calls, tokens and cost for the whole run, and a wall-time
   estimate from the measured latency and ``llm.max_concurrency``.

Everything lands in one rich table; ``CheckReport.ok`` is False when a probe failed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

from recnet.config.scenario import Scenario
from recnet.errors import RecnetError

Status = Literal["ok", "warn", "fail"]
PROBE_SCHEMA_NAME = "recnet_check"
PROBE_TOKEN = "recnet-probe-7f3a"
PROBE_SCHEMA: dict[str, Any] = {
    "title": "RecnetCheck",
    "type": "object",
    "properties": {
        "token": {"type": "string", "enum": [PROBE_TOKEN]},
        "greeting": {"type": "string"},
    },
    "required": ["token", "greeting"],
    "additionalProperties": False,
}
PROBE_PROMPT = "Say hello in a few words."


@dataclass
class CheckRow:
    probe: str
    status: Status
    detail: str
    latency_ms: float | None = None
    tokens: tuple[int, int] | None = None


@dataclass
class CheckReport:
    scenario: str
    base_url: str | None
    model: str
    rows: list[CheckRow] = field(default_factory=list)
    structured_output: str = "unknown"  # honoured | rejected | ignored | unknown

    @property
    def ok(self) -> bool:
        return all(row.status != "fail" for row in self.rows)

    def add(self, row: CheckRow) -> CheckRow:
        self.rows.append(row)
        return row


def probe_settings(scenario: Scenario, structured_output: str | None = None) -> Any:
    """The scenario's LLM settings for probing: no cache, no budget, one attempt per request."""
    llm = scenario.llm.model_copy(deep=True)
    llm.cache.enabled = False
    llm.budget.max_calls = llm.budget.max_tokens = llm.budget.max_cost = None
    llm.retry.max_attempts = 1
    if structured_output is not None:
        llm.structured_output = structured_output  # type: ignore[assignment]
    return llm


async def models_row(scenario: Scenario) -> CheckRow:
    """Is the server reachable, and does ``GET /models`` list ``llm.model``?"""
    import openai

    from recnet.llm.credentials import resolve_api_key

    llm = scenario.llm
    key = resolve_api_key(llm.api_key_env, llm.base_url)
    client = openai.AsyncOpenAI(
        api_key=key, base_url=llm.base_url, max_retries=0, timeout=llm.retry.timeout
    )
    started = time.perf_counter()
    try:
        served = [m.id async for m in client.models.list()]
    except openai.APIConnectionError as exc:
        return CheckRow(
            "server reachable",
            "fail",
            f"cannot connect to {llm.base_url or 'the OpenAI API'} ({exc.__class__.__name__}); "
            "start the server or fix llm.base_url",
        )
    except openai.AuthenticationError:
        return CheckRow(
            "server reachable", "fail", f"the server refused the API key in ${llm.api_key_env}"
        )
    except openai.APIStatusError as exc:
        return CheckRow(
            "server reachable / model",
            "warn",
            f"reachable, but GET /models answered {exc.status_code}: cannot list models (the "
            "probes below show whether the model answers)",
            (time.perf_counter() - started) * 1000,
        )
    finally:
        await client.close()
    latency = (time.perf_counter() - started) * 1000
    if llm.model in served:
        return CheckRow("server reachable / model", "ok", f"{llm.model} is served", latency)
    shown = ", ".join(served[:6]) + (" ..." if len(served) > 6 else "")
    return CheckRow(
        "server reachable / model",
        "fail" if served else "warn",
        f"{llm.model} is not among the served models ({shown or 'none listed'}); "
        "set llm.model to one of them",
        latency,
    )


async def structured_row(scenario: Scenario, mode: str) -> tuple[CheckRow, str]:
    """One schema-bound request in ``mode``: (row, verdict honoured/rejected/ignored/failed)."""
    from recnet.llm.factory import build_backend
    from recnet.llm.protocol import LLMRequest
    from recnet.llm.stats import LLMStats

    backend = build_backend(probe_settings(scenario, mode), stats=LLMStats())
    request = LLMRequest(
        model=scenario.llm.model,
        messages=({"role": "user", "content": PROBE_PROMPT},),
        max_tokens=64,
        response_schema=PROBE_SCHEMA,
        schema_name=PROBE_SCHEMA_NAME,
        operation="check",
    )
    label = f"structured output ({mode})"
    try:
        response = await backend.complete(request)
    except RecnetError as exc:
        text = str(exc)
        if "response_format" in text or "json_schema" in text or "400" in text:
            return (
                CheckRow(
                    label,
                    "warn",
                    "the server rejects json_schema response formats: llm.structured_output "
                    "auto switches to JSON in text after the first request; set json_text to "
                    "skip that request",
                ),
                "rejected",
            )
        return CheckRow(label, "fail", f"request failed: {text}"), "failed"
    finally:
        await backend.aclose()
    tokens = (response.tokens_in, response.tokens_out)
    try:
        from recnet.llm.structured import extract_json_object

        answer = extract_json_object(response.text)
    except ValueError:
        answer = {}
    if answer.get("token") == PROBE_TOKEN:
        return CheckRow(label, "ok", "answers follow the schema", response.latency_ms, tokens), (
            "honoured"
        )
    shown = " ".join(response.text.split())[:80]
    if mode == "json_text":
        return (
            CheckRow(
                label,
                "fail",
                f"even with the schema in the prompt the answer does not follow it: {shown!r}",
                response.latency_ms,
                tokens,
            ),
            "failed",
        )
    return (
        CheckRow(
            label,
            "fail",
            "the server accepts response_format but IGNORES it (answer: "
            f"{shown!r}); set llm.structured_output: json_text (--set "
            "llm.structured_output=json_text) so the schema travels in the prompt",
            response.latency_ms,
            tokens,
        ),
        "ignored",
    )


def probe_operations(scenario: Scenario) -> list[str]:
    """The pack operations the run will call, as ``llm.fuse`` / ``llm.batch_size`` set them."""
    llm = scenario.llm
    ops = ["choose_merge", "predict"] if "choose_merge" in llm.fuse else ["predict", "merge"]
    if "reflect" in llm.fuse:
        ops.append("reflect_fused")
    else:
        ops += ["reflect_user", "reflect_item", "extract"]
    if llm.batch_size > 1:
        ops += ["summarize_batch", "merge_batch"] + (
            [] if "reflect" in llm.fuse else ["extract_batch"]
        )
    ops += ["summarize", "rank"]
    if "merge" not in ops:
        ops.append("merge")  # a batch's part that fails is re-asked alone
    if scenario.backward.enabled:
        ops += ["gradient", "optimize"]
    return list(dict.fromkeys(ops))


async def operation_rows(scenario: Scenario, mode: str | None) -> list[CheckRow]:
    """One tiny request per operation, validated as a real call would be (no repairs)."""
    from recnet.dry_run import sample_variables
    from recnet.llm.factory import build_backend
    from recnet.llm.pack import load_pack
    from recnet.llm.stats import LLMStats
    from recnet.llm.structured import CallMeta, call_structured

    tiny = scenario.model_copy(deep=True)
    tiny.llm.max_profile_chars = 40
    tiny.llm.max_message_chars = 40
    tiny.llm.batch_size = 2
    tiny.evaluation.n_negatives = 2
    pack = load_pack(scenario.llm.pack)
    backend = build_backend(probe_settings(scenario, mode), stats=LLMStats())
    rows: list[CheckRow] = []
    try:
        for operation in probe_operations(scenario):
            variables = sample_variables(pack, operation, tiny)
            meta = CallMeta.from_settings(scenario.llm, agent_id="check", phase="check")
            started = time.perf_counter()
            try:
                result = await call_structured(
                    backend, pack, operation, variables, meta=meta, max_repairs=0
                )
            except RecnetError as exc:
                rows.append(CheckRow(f"operation {operation}", "fail", str(exc)))
                continue
            latency = (time.perf_counter() - started) * 1000
            record = result.records[-1] if result.records else {}
            tokens = (int(record.get("tokens_in") or 0), int(record.get("tokens_out") or 0))
            if result.ok:
                rows.append(CheckRow(f"operation {operation}", "ok", "valid", latency, tokens))
            else:
                error = " ".join(str(result.error).split())[:100]
                rows.append(
                    CheckRow(
                        f"operation {operation}",
                        "warn",
                        f"answer not valid ({error}); a real call would re-ask it",
                        latency,
                        tokens,
                    )
                )
    finally:
        await backend.aclose()
    return rows


async def run_check(
    scenario: Scenario, estimate: Callable[[], Any] | None = None, name: str = "scenario"
) -> CheckReport:
    """Every probe in order; ``estimate`` returns the dry run's ``Estimate`` (or None)."""
    llm = scenario.llm
    report = CheckReport(scenario=name, base_url=llm.base_url, model=llm.model)
    if llm.backend != "openai":
        report.add(
            CheckRow(
                "backend",
                "warn",
                f"llm.backend is {llm.backend!r}: only an OpenAI-compatible server (openai) can "
                "be probed; showing the cost estimate",
            )
        )
    else:
        reach = report.add(await models_row(scenario))
        if reach.status == "fail" and "connect" in reach.detail:
            return report
        mode = llm.structured_output
        first = "json_text" if mode == "json_text" else "json_schema"
        row, verdict = await structured_row(scenario, first)
        report.add(row)
        report.structured_output = verdict
        use: str | None = None
        if verdict == "ignored":
            row, again = await structured_row(scenario, "json_text")
            row.detail += " (with llm.structured_output=json_text)" if again == "honoured" else ""
            report.add(row)
            use = "json_text"
        elif verdict == "rejected":
            use = "json_text"
        for op_row in await operation_rows(scenario, use):
            report.add(op_row)
    if estimate is not None:
        figures = estimate()
        latencies = [r.latency_ms for r in report.rows if r.latency_ms and r.probe.startswith("op")]
        detail = (
            f"{figures.calls:,} calls, {figures.tokens:,} tokens "
            f"({figures.calls / max(figures.train_interactions, 1):.2f} calls and "
            f"{figures.tokens / max(figures.train_interactions, 1):,.0f} tokens per training "
            "interaction)"
        )
        cost = figures.cost
        detail += f", about ${cost:,.2f}" if cost is not None else ", no price in llm.budget.prices"
        if latencies:
            hours = figures.calls * statistics.median(latencies) / 1000 / llm.max_concurrency / 3600
            detail += f"; about {hours:,.1f} h at the probes' median latency and concurrency "
            detail += f"{llm.max_concurrency}"
        report.add(CheckRow("whole-run estimate", "ok", detail))
    return report


def check_table(report: CheckReport) -> Table:
    """The report as one rich table."""
    table = Table(
        title=f"recnet check · {report.scenario} · {report.model} at "
        f"{report.base_url or 'the OpenAI API'}"
    )
    for column in ("probe", "result", "latency ms", "tokens in/out", "detail"):
        right = column in ("latency ms", "tokens in/out")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for row in report.rows:
        table.add_row(
            row.probe,
            Text(row.status, style=styles[row.status]),
            "" if row.latency_ms is None else f"{row.latency_ms:,.0f}",
            "" if row.tokens is None else f"{row.tokens[0]:,}/{row.tokens[1]:,}",
            row.detail,
        )
    table.caption = (
        "all probes passed"
        if report.ok and all(r.status == "ok" for r in report.rows)
        else ("warnings above" if report.ok else "a probe FAILED: fix it before spending")
    )
    return table


def report_json(report: CheckReport) -> str:
    """The report as JSON (for scripts)."""
    return json.dumps(
        {
            "ok": report.ok,
            "structured_output": report.structured_output,
            "rows": [row.__dict__ for row in report.rows],
        },
        indent=2,
    )
