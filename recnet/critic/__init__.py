"""Critics of the backward phase (see ``recnet.critic.base``)."""

from recnet.critic.base import ClientJob, Critic, Gradient, RouterJob

__all__ = ["ClientJob", "Critic", "Gradient", "RouterJob"]
