"""The backward phase: feedback → gradient → optimize, validated and reversible (DESIGN §2).

Pipeline position: a hook of the phase loop (``recnet.phases.loop``), run after reception and
before commit, every ``backward.every`` forward steps. ``phase`` runs a round (feedback, the
critic's judgements and edits, batches), ``plans`` turns edits into reversible apply steps with
their lineage rows, ``safeguard`` validates each batch and rolls it back when it hurts. The critic
(``recnet.critic``) is the only part that differs between an offline and an LLM run.
"""

from recnet.phases.backward.phase import BackwardPhase, RoundStats, make_backward_hook
from recnet.phases.backward.plans import Planned

__all__ = ["BackwardPhase", "Planned", "RoundStats", "make_backward_hook"]
