"""A scripted backend: answers from a list or a callable. For tests, demos and users' fakes.

Pipeline position: a provider, interchangeable with ``OpenAIBackend`` (``llm.backend: scripted``
with ``llm.options.answers: [...]`` or ``llm.options.responder: "module:function"``). An answer
that is an exception instance is raised instead of returned, so failures can be scripted too.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from recnet.config.scenario import LLMSettings
from recnet.errors import BackendError
from recnet.llm.protocol import LLMRequest, LLMResponse, estimate_prompt_tokens, estimate_tokens

Answer = str | BaseException
Responder = Callable[[LLMRequest], Any]


class ScriptedBackend:
    """Answers each request with the next scripted answer, or with ``responder(request)``."""

    def __init__(
        self,
        answers: Responder | Sequence[Answer],
        *,
        model: str = "scripted",
        latency: float = 0.0,
    ) -> None:
        if callable(answers):
            self._responder: Responder | None = answers
            self._answers: list[Answer] = []
        else:
            self._responder = None
            self._answers = list(answers)
        self.model = model
        self.latency = latency
        self.requests: list[LLMRequest] = []

    @classmethod
    def from_settings(cls, settings: LLMSettings, **options: Any) -> ScriptedBackend:
        """Build from ``llm.options``: ``answers`` (a list) or ``responder`` ("module:function")."""
        from recnet.llm.loader import import_object

        if "responder" in options:
            responder = options.pop("responder")
            if isinstance(responder, str):
                responder = import_object(responder, what="scripted responder")
            answers: Any = responder
        elif "answers" in options:
            answers = options.pop("answers")
        else:
            raise BackendError(
                "llm.backend is 'scripted' but llm.options has neither 'answers' nor 'responder'",
                "set llm.options.answers to a list of answers or llm.options.responder to "
                "'module:function'",
            )
        return cls(answers, model=settings.model, **options)

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        index = len(self.requests)
        self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._responder is not None:
            answer = self._responder(request)
            if inspect.isawaitable(answer):
                answer = await answer
        elif index < len(self._answers):
            answer = self._answers[index]
        else:
            raise BackendError(
                f"scripted backend ran out of answers after {len(self._answers)} calls "
                f"({request.describe()})",
                "give the scripted backend more answers or a responder callable",
            )
        if isinstance(answer, BaseException):
            raise answer
        text = str(answer)
        return LLMResponse(
            text=text,
            tokens_in=estimate_prompt_tokens(request.messages),
            tokens_out=estimate_tokens(text),
            latency_ms=self.latency * 1000.0,
            model=request.model or self.model,
        )

    async def aclose(self) -> None:
        return None
