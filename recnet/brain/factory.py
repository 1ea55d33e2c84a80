"""Choose the brain a scenario asks for (composition root helper).

Pipeline position: called once by ``recnet.runner`` before the world is built.
"""

from __future__ import annotations

from recnet.brain.base import Brain
from recnet.brain.offline import OfflineBrain
from recnet.config.scenario import Scenario
from recnet.errors import ScenarioError


def build_brain(scenario: Scenario) -> Brain:
    """The brain named by ``llm.backend`` (``offline`` = the deterministic reference policy)."""
    if scenario.llm.backend == "offline":
        return OfflineBrain(scenario)
    raise ScenarioError(
        f"llm.backend: {scenario.llm.backend!r} is not available yet", "use llm.backend=offline"
    )
