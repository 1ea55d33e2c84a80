"""recnet: simulate preference propagation in agentic recommender systems.

The package follows one data flow: scenario YAML (``recnet.config``) → dataset (``recnet.data``)
→ world of client and router agents (``recnet.world``) → phase loop (``recnet.phases``) run by a
brain (``recnet.brain``) → trace store (``recnet.trace``) → CLI and reports (``recnet.cli``).
"""

__version__ = "0.1.0"
