"""Choose the brain a scenario asks for (composition root helper).

Pipeline position: called once by ``recnet.runner`` before the world is built. ``llm.backend``
``offline`` (the default) is the deterministic reference policy; any other value — ``openai``,
``replay``, ``scripted``, ``package.module:Class`` or an entry-point name in ``recnet.backends``
— is the LLM brain on the backend stack ``recnet.llm.build_backend`` builds for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from recnet.brain.base import Brain
from recnet.brain.offline import OfflineBrain
from recnet.config.scenario import Scenario
from recnet.exec.base import build_executor


def build_brain(
    scenario: Scenario,
    *,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    cache_path: Path | None = None,
    run_id: str | None = None,
) -> Brain:
    """The brain named by ``llm.backend``.

    For the LLM brain: ``on_record`` receives every attempt's ``llm_calls`` row (``run_id`` is
    ``run_id`` when given, else None for the caller to fill); ``cache_path`` is the record/replay
    cache (else ``llm.cache.path``; no cache when both are unset, and ``replay`` then fails).
    The offline brain ignores all three and runs its merges and rankings on the scenario's
    ``executor`` (``recnet.exec``).
    """
    if scenario.llm.backend == "offline":
        return OfflineBrain(scenario, build_executor(scenario.executor))
    from recnet.brain.llm import LLMBrain

    return LLMBrain.from_scenario(
        scenario, on_record=on_record, cache_path=cache_path, run_id=run_id
    )
