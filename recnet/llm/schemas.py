"""Pydantic output models of the LLM operations; the prompt pack's manifest names them.

Pipeline position: ``structured.call_structured`` sends ``Model.model_json_schema()`` with each
request and validates the answer with the model. Field descriptions travel in the schema, so
they are written for the LLM. Unknown extra fields in an answer are ignored; missing explanatory
fields (reasons) default to empty so only the substance of an answer can fail validation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OutputModel(BaseModel):
    """Base of every operation's output: extra keys are ignored."""

    model_config = ConfigDict(extra="ignore")


class ExtractOutput(OutputModel):
    """``extract``: a profile's fine-grained attributes, grouped by category."""

    attributes: dict[str, list[str]] = Field(
        description='Category → short attribute phrases, e.g. {"genre": ["film noir"], '
        '"mood": ["bleak"]}.'
    )


class SummarizeOutput(OutputModel):
    """``summarize``: a router's new community profile."""

    profile: str = Field(description="The router's updated profile: a compact descriptor.")


class ReflectOutput(OutputModel):
    """``reflect_user`` / ``reflect_item``: an updated profile after an interaction."""

    updated_profile: str = Field(description="The whole revised profile text.")
    reason: str = Field("", description="One sentence: what changed and why.")


class MergeOutput(OutputModel):
    """``merge``: the propagated profile built from buffered router messages."""

    propagated_profile: str = Field(description="The propagated profile after the merge.")
    accepted: list[int] = Field(
        default_factory=list, description="Indices of the messages taken in."
    )
    rejected: list[int] = Field(
        default_factory=list, description="Indices of the messages left out."
    )
    reason: str = Field("", description="Why messages were accepted or rejected.")
    rule_ids: dict[str, str] = Field(
        default_factory=dict,
        description="For each message a filter rule decided: its index (as a string) → the id of "
        "that rule, exactly as given. Leave a message out when no rule decided it.",
    )


class PredictOutput(OutputModel):
    """``predict``: the one candidate the user would choose."""

    chosen: str = Field(description="The id of the chosen candidate, exactly as given.")
    reasoning: str = Field("", description="Why this candidate fits the user best.")


class RankOutput(OutputModel):
    """``rank``: all candidates, best first."""

    ranking: list[str] = Field(description="Every candidate id, most likely choice first.")
    reasoning: str = Field("", description="The main reasons for the order.")


Judgement = Literal["positive", "neutral", "negative"]


class ModuleJudgement(OutputModel):
    """Credit for one module in the backward phase."""

    module: str = Field(description="The module's id, exactly as given.")
    judgement: Judgement = Field(description="How the module affected the prediction.")
    reason: str = Field("", description="Evidence for the judgement.")
    suggestion: str = Field(
        "no adjustment", description='An actionable revision, or "no adjustment".'
    )


class GradientOutput(OutputModel):
    """``gradient``: a judgement and suggestion for every module that took part."""

    judgements: list[ModuleJudgement] = Field(description="One entry per module.")


OptimizeOperation = Literal[
    "rewrite", "tau", "split", "merge", "modify", "reorder", "add", "delete", "none"
]


class OptimizeOutput(OutputModel):
    """``optimize``: one edit of one module, following its textual gradient."""

    operation: OptimizeOperation = Field(description="The edit to apply; none = keep as is.")
    content: str | None = Field(
        None, description="rewrite/modify/add: the new text (profile, router profile or rule)."
    )
    target: str | None = Field(
        None, description="modify/delete: the rule id; merge: the router to merge with."
    )
    order: list[str] | None = Field(None, description="reorder: all rule ids in the new order.")
    parts: list[str] | None = Field(
        None, description="split: the profile of each new router (two or more)."
    )
    tau: float | None = Field(
        None, description="tau (and optionally rewrite): the router's new similarity threshold."
    )
    reason: str = Field("", description="Why this edit follows from the gradient.")


class ChooseMergeOutput(OutputModel):
    """``choose_merge`` (fused): the user's choice and the merge of its buffered messages."""

    chosen: str = Field(description="The id of the chosen candidate, exactly as given.")
    reasoning: str = Field("", description="Why this candidate fits the user best.")
    propagated_profile: str = Field(
        "", description="The propagated profile after taking in the accepted messages."
    )
    accepted: list[int] = Field(default_factory=list, description="Indices of accepted messages.")
    rejected: list[int] = Field(default_factory=list, description="Indices of rejected messages.")
    rule_ids: dict[str, str] = Field(
        default_factory=dict,
        description="For each message a filter rule decided: its index (as a string) → the id of "
        "that rule.",
    )


class ReflectedProfile(OutputModel):
    """One agent's part of a fused reflection: its revised text and that text's attributes."""

    updated_profile: str = Field(description="The whole revised profile text.")
    attributes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Category → short attribute phrases the revised profile expresses.",
    )


class ReflectFusedOutput(OutputModel):
    """``reflect_fused``: the user's and the items' revised profiles after one interaction."""

    profiles: dict[str, dict[str, object]] = Field(
        description="Agent id (exactly as given) → {updated_profile, attributes}."
    )


class SummarizeBatchOutput(OutputModel):
    """``summarize_batch``: several routers' new profiles, keyed by router id."""

    profiles: dict[str, object] = Field(description="Router id (exactly as given) → its profile.")


class MergeBatchOutput(OutputModel):
    """``merge_batch``: several clients' merges, keyed by client id."""

    clients: dict[str, dict[str, object]] = Field(
        description="Client id (exactly as given) → {propagated_profile, accepted, rejected, "
        "rule_ids}."
    )


class ExtractBatchOutput(OutputModel):
    """``extract_batch``: several profiles' attributes, keyed by agent id."""

    profiles: dict[str, object] = Field(
        description="Agent id (exactly as given) → {category: [attribute phrases]}."
    )


OUTPUT_MODELS: dict[str, type[OutputModel]] = {
    model.__name__: model
    for model in (
        ExtractOutput,
        SummarizeOutput,
        ReflectOutput,
        MergeOutput,
        PredictOutput,
        RankOutput,
        GradientOutput,
        OptimizeOutput,
        ChooseMergeOutput,
        ReflectFusedOutput,
        SummarizeBatchOutput,
        MergeBatchOutput,
        ExtractBatchOutput,
    )
}
