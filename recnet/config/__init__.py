"""Scenario configuration: YAML → validated ``Scenario`` (the first stage of the pipeline)."""

from recnet.config.loader import apply_overrides, load_scenario
from recnet.config.scenario import Scenario

__all__ = ["Scenario", "apply_overrides", "load_scenario"]
