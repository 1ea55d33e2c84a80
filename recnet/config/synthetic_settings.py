"""Pydantic model of a scenario's ``dataset.synthetic`` block: the planted-community world.

Pipeline position: part of the scenario (``recnet.config.scenario.DatasetSettings.synthetic``);
read by the synthetic world generator (``recnet.data.synthetic``).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from recnet.config.checks import communities_fit
from recnet.config.llm_settings import Section


class SyntheticSettings(Section):
    """Planted-community world generator (``dataset.kind: synthetic``)."""

    n_users: int = Field(200, ge=2, description="Number of synthetic users.")
    n_items: int = Field(400, ge=4, description="Number of synthetic items.")
    n_communities: int = Field(8, ge=1, description="Planted taste communities.")
    attributes_per_community: int = Field(
        6, ge=1, description="Attributes that characterise each community."
    )
    interactions_per_user: int = Field(30, ge=3, description="Chronological choices per user.")
    noise: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of choices made outside the user's community."
    )
    n_drifts: int = Field(
        2, ge=0, description="Scheduled preference drifts (a community adopts new attributes)."
    )
    drift_window: tuple[float, float] = Field(
        (0.0, 1.0),
        description="The part of the 180-day horizon the drifts are spread over, as fractions "
        "[start, end]: drift k of n starts at start + (end - start) * (k + 1) / (n + 1). Late "
        "windows (e.g. [0.5, 0.9]) leave drifts in progress when the final test is taken.",
    )
    drift_spread_days: float = Field(
        0.0,
        ge=0.0,
        description="Members of a drifting community adopt the new taste at staggered times, "
        "uniformly within this many days after the drift starts (0 = all at once).",
    )
    adopt_share: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of a drifting community's members who adopt it."
    )
    sparse_share: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of users who make only sparse_interactions choices."
    )
    sparse_interactions: int = Field(
        5, ge=3, description="Choices each sparse user makes (sparse_share)."
    )
    cold_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of items released at a random time in the horizon (cold items: never "
        "chosen before their release).",
    )

    @model_validator(mode="after")
    def _fits(self) -> SyntheticSettings:
        communities_fit(self.n_communities, self.n_users, self.n_items, self.n_drifts)
        start, end = self.drift_window
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(
                f"drift_window={list(self.drift_window)} must satisfy 0 <= start < end <= 1 "
                "(fractions of the horizon), e.g. [0.5, 0.9]"
            )
        return self
