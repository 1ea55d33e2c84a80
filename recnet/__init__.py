"""recnet: simulate preference propagation in agentic recommender systems.

The package follows one data flow: scenario YAML (``recnet.config``) → dataset (``recnet.data``)
→ world of client and router agents (``recnet.world``) → phase loop (``recnet.phases``) run by a
brain (``recnet.brain``) → trace store (``recnet.trace``) → CLI and reports (``recnet.cli``).

The public Python API: ``from recnet import Simulation, load_scenario`` (``recnet.simulation``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Simulation", "__version__", "load_scenario"]

if TYPE_CHECKING:
    from recnet.config.loader import load_scenario
    from recnet.simulation import Simulation


def __getattr__(name: str) -> Any:
    """Import the public API lazily, so ``import recnet`` stays cheap for the CLI."""
    if name == "Simulation":
        from recnet.simulation import Simulation

        return Simulation
    if name == "load_scenario":
        from recnet.config.loader import load_scenario

        return load_scenario
    raise AttributeError(f"module 'recnet' has no attribute {name!r}")
