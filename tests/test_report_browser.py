"""`recnet report` opened in a real headless browser (Debian's chromium through selenium).

Two real runs are rendered: the synthetic scenario with the LLM brain (the real ``openai``
client against the local fake server, with a rate limit and a malformed answer injected, so the
LLM section has retries and repairs to show) and a MovieLens subsample with the offline brain
and one agent's story. Each page is opened in Chromium; every section must be there, every chart
must have drawn data (an SVG element with an id ``data-*`` and a non-empty path), the browser
console must stay clean, and a screenshot is saved under the test's temporary folder.

`.ci/run` installs chromium and chromium-driver when they are missing.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_responder import FakeLLM
from llm_server import Fault, LLMTestServer

from recnet.config.scenario import Scenario
from recnet.report import write_report
from recnet.runner import simulate

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SECTIONS = ("run", "metrics", "propagation", "routers", "llm")


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer() as running:
        yield running


@pytest.fixture
def browser() -> Iterator[object]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and shutil.which(Path(path).name) is None:
            pytest.fail(f"{path} is missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver") or CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def llm_synthetic(server: LLMTestServer) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "report-synthetic",
            "seed": 5,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {
                    "n_users": 16,
                    "n_items": 32,
                    "n_communities": 3,
                    "interactions_per_user": 6,
                    "n_drifts": 1,
                },
            },
            "world": {"n_routers": 4},
            "propagation": {"update_size": 8, "max_recipients": 10},
            "evaluation": {"n_negatives": 5},
            "llm": {
                "backend": "openai",
                "base_url": server.base_url,
                "api_key_env": "RECNET_TEST_UNSET_KEY",  # local server: never a real key
                "model": "gpt-4o-mini",  # priced in the default table, so cost is shown
                "max_concurrency": 4,
                "retry": {"max_attempts": 4, "initial_wait": 0.0, "max_wait": 0.05, "jitter": 0},
                "cache": {"enabled": False},
            },
        }
    )


def movielens_subsample(zip_path: Path) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "report-movielens",
            "seed": 1,
            "dataset": {
                "kind": "movielens",
                "path": str(zip_path),
                "max_users": 40,
                "max_interactions_per_user": 25,
            },
            "world": {"n_routers": 6},
            "propagation": {"update_size": 25},
            "evaluation": {"n_negatives": 19},
        }
    )


def assert_self_contained(text: str) -> None:
    """Nothing on the page is fetched: no external src/href, stylesheet link, import or script."""
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert not re.search(r"<link|@import|url\(\s*['\"]?https?:|<script", text)


def check_page(driver, html: Path, screenshot: Path, *, expect_llm: bool) -> dict[str, int]:
    """Open ``html``; check sections, charts and console; save a screenshot. Charts per section."""
    driver.get(html.resolve().as_uri())
    found = driver.execute_script(
        """
        const out = {sections: {}, empty_charts: [], charts: {}, notices: []};
        for (const s of document.querySelectorAll('main > section')) {
          const charts = s.querySelectorAll('figure.chart');
          out.sections[s.id] = charts.length;
          for (const f of charts) {
            const svg = f.querySelector('svg');
            const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
            const drawn = svg ? [...svg.querySelectorAll('[id^="data-"]')].filter(
              g => [...g.querySelectorAll('path'), ...(g.tagName === 'path' ? [g] : [])]
                .some(p => (p.getAttribute('d') || '').length > 10)
                || g.querySelector('use')) : [];
            out.charts[f.dataset.chart] = drawn.length;
            if (!svg || box.width < 100 || box.height < 50 || drawn.length === 0) {
              out.empty_charts.push(f.dataset.chart);
            }
          }
          for (const p of s.querySelectorAll('p.empty[data-empty]')) {
            out.notices.push(p.dataset.empty);
          }
        }
        return out;
        """
    )
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(int(height), 16000))
    assert driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert found["empty_charts"] == [], found
    for sid in ("run", "metrics", "propagation", "routers"):
        assert sid in found["sections"], found
    for sid in ("metrics", "propagation", "routers"):
        assert found["sections"][sid] >= 1, (sid, found)
    assert {"accuracy", "messages", "rules", "multicast", "reach", "graph", "router-count"} <= set(
        found["charts"]
    ), found
    if expect_llm:
        assert found["sections"]["llm"] >= 2, found
        assert {"llm-operations", "llm-steps"} <= set(found["charts"])
        assert "llm" not in found["notices"]
    else:
        assert found["notices"] == ["llm"], found  # the offline run says it has no LLM calls
    return found["sections"]


async def test_report_of_an_llm_synthetic_run_renders_in_chromium(
    server: LLMTestServer, tmp_path: Path, browser
) -> None:
    server.set_responder(FakeLLM())
    server.plan(Fault.rate_limit(retry_after=0.05), Fault.malformed())
    trace = tmp_path / "synthetic.sqlite"
    result = await simulate(llm_synthetic(server), trace_path=trace)
    assert result.llm_stats is not None and result.llm_stats.calls > 0
    html = write_report([trace])
    assert html == tmp_path / "synthetic.html"
    text = html.read_text()
    assert_self_contained(text)
    sections = check_page(browser, html, tmp_path / "synthetic.png", expect_llm=True)
    assert set(SECTIONS) <= set(sections)
    # the table totals show the injected retry and repair
    assert "retries" in text and "repairs" in text
    assert "finished" in text


def test_report_of_a_movielens_subsample_with_an_agent_renders_in_chromium(
    tmp_path: Path, ml_small_zip: Path, browser
) -> None:
    trace = tmp_path / "movielens.sqlite"
    asyncio.run(simulate(movielens_subsample(ml_small_zip), trace_path=trace))
    with sqlite3.connect(trace) as db:
        user = db.execute(
            "SELECT client_id FROM messages WHERE client_id LIKE 'u:%' "
            "GROUP BY client_id ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
    html = write_report([trace], tmp_path / "ml.html", agent=user)
    sections = check_page(browser, html, tmp_path / "movielens.png", expect_llm=False)
    assert sections["agent"] == 2  # its messages' fates and its choices
    text = html.read_text()
    assert_self_contained(text)
    assert f"Agent {user}" in text
    assert html.stat().st_size < 5_000_000


def test_report_of_a_backward_run_marks_splits_and_merges(tmp_path: Path, browser) -> None:
    """The pinned synthetic backward scenario splits and merges routers and rewrites rules."""
    reference = Path(__file__).parent / "reference" / "synthetic_backward.scenario.json"
    scenario = Scenario.model_validate(json.loads(reference.read_text()))
    trace = tmp_path / "backward.sqlite"
    asyncio.run(simulate(scenario, trace_path=trace))
    with sqlite3.connect(trace) as db:
        kept = dict(
            db.execute(
                "SELECT operation, count(*) FROM router_operations WHERE status='kept' "
                "AND operation IN ('split', 'merge') GROUP BY operation"
            ).fetchall()
        )
    assert kept.get("split", 0) > 0 and kept.get("merge", 0) > 0
    html = write_report([trace])
    check_page(browser, html, tmp_path / "backward.png", expect_llm=False)
    text = html.read_text()
    assert f"splits ({kept['split']})" in text and f"merges ({kept['merge']})" in text
    assert "<h3>Splits and merges</h3>" in text
    assert re.search(r"rule-[a-z_]+: [2-9]\d* versions", text)  # a rule the backward phase rewrote
