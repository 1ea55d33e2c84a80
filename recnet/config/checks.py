"""Reusable constraints of scenario options (used by the models in ``recnet.config.scenario``).

Pipeline position: part of scenario validation, the first stage. Each function is a pydantic
``AfterValidator``: it returns the value or raises ``ValueError`` with a message that says what is
allowed; the loader prefixes it with the key path.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from recnet.registry import BASELINES, CRITICS, DATASETS, PERCEPTION, ROUTING, Registry

#: Rules every filter memory starts with (recency, conflict, min relevance, max share).
INITIAL_FILTER_RULES = 4
#: SQLite integers are signed 64-bit: the seed is stored in the trace.
MAX_SEED = 2**63 - 1
_BACKEND_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def unique(values: list) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"each value may appear once (repeated: {', '.join(repeated)})")
    return values


def env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError("must be an environment variable name such as OPENAI_API_KEY")
    return value


def file_name_part(value: str) -> str:
    if not value.strip() or any(c in value for c in "/\\\0"):
        raise ValueError("must be a non-empty name without '/', '\\' or NUL (it names files)")
    return value


def backend_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a backend: offline, openai, replay, scripted or module:Class")
    if ":" in value and not _BACKEND_CLASS.match(value):
        raise ValueError("a custom backend is written module.path:ClassName")
    return value


def non_negative_prices(prices: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    for model, pair in prices.items():
        if min(pair) < 0:
            raise ValueError(f"prices of {model!r} must be >= 0 (got {list(pair)})")
    return prices


EnvName = Annotated[str, AfterValidator(env_name)]
NonEmpty = Annotated[str, Field(min_length=1)]


def communities_fit(n_communities: int, n_users: int, n_items: int, n_drifts: int) -> None:
    """The synthetic generator's needs: each community has a user and an item; a drift moves
    one community towards another's taste."""
    if n_communities > min(n_users, n_items):
        raise ValueError(
            f"n_communities={n_communities} exceeds n_users={n_users} or n_items={n_items}"
        )
    if n_drifts > 0 and n_communities < 2:
        raise ValueError(
            f"n_drifts={n_drifts} needs n_communities >= 2 (a drift moves one community towards "
            "another's taste); set n_drifts: 0 or more communities"
        )


#: Metric cut-offs: at least one, each >= 1, none repeated.
Cutoffs = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1), AfterValidator(unique)]


def _registered(registry: Registry) -> AfterValidator:
    """A validator: the value must be a name ``registry`` knows (the error lists them)."""

    def check(value: str) -> str:
        if not registry.knows(value):
            raise ValueError(str(registry.unknown(value)))
        return value

    return AfterValidator(check)


# The registry itself rides along as metadata so ``recnet options`` can list the built-in names.
DatasetName = Annotated[str, _registered(DATASETS), DATASETS]
PerceptionName = Annotated[str, _registered(PERCEPTION), PERCEPTION]
RoutingName = Annotated[str, _registered(ROUTING), ROUTING]
BaselineName = Annotated[str, _registered(BASELINES), BASELINES]
CriticName = Annotated[str, _registered(CRITICS), CRITICS]


def needs_path(kind: str, path: object) -> None:
    if kind == "recbole" and path is None:
        raise ValueError(
            "kind=recbole needs dataset.path (the folder holding <name>.inter, .item, ...)"
        )


def world_bounds(min_routers: int, n_routers: int, max_routers: int) -> None:
    if not min_routers <= n_routers <= max_routers:
        raise ValueError(
            "need min_routers <= n_routers <= max_routers "
            f"(got {min_routers}, {n_routers}, {max_routers})"
        )


def user_init_fits(user_init: str, user_init_items: int) -> None:
    if user_init == "history" and user_init_items < 1:
        raise ValueError("user_init: history needs user_init_items >= 1")
    if user_init_items > 0 and user_init != "history":
        raise ValueError(
            f"user_init_items={user_init_items} is used only with user_init: history "
            f"(got user_init: {user_init})"
        )


#: When buffers flush: each moment at most once.
FlushOn = Annotated[list[Literal["full", "before_act", "step_end"]], AfterValidator(unique)]
#: A scenario name: it becomes part of run ids and trace file names.
RunName = Annotated[str, AfterValidator(file_name_part)]
