"""API key lookup for OpenAI-compatible endpoints (chat and embeddings).

Pipeline position: used by ``OpenAIBackend`` and ``OpenAIEmbedder`` when they build their client.
The rule: the key is read from the environment variable named in the settings
(``llm.api_key_env`` / ``embedder.api_key_env``, default ``OPENAI_API_KEY``). When that variable is
unset, a ``base_url`` on the local machine (localhost, 127.0.0.0/8, ::1, 0.0.0.0 — where vLLM,
Ollama and LM Studio usually run without auth) gets the dummy key ``"not-needed"``; any other
endpoint raises ``BackendError`` naming the variable. Keys are never logged, cached or traced.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from recnet.errors import BackendError

DUMMY_KEY = "not-needed"


def is_local_url(base_url: str | None) -> bool:
    """True when ``base_url`` points at this machine."""
    if not base_url:
        return False
    host = (urlsplit(base_url).hostname or "").lower()
    if host in {"localhost", "0.0.0.0"} or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(
    env_var: str, base_url: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """The key from ``env_var``; a dummy for a local ``base_url``; else ``BackendError``."""
    env = os.environ if environ is None else environ
    key = env.get(env_var, "").strip()
    if key:
        return key
    if is_local_url(base_url):
        return DUMMY_KEY
    where = base_url or "the OpenAI API"
    raise BackendError(
        f"environment variable {env_var} is not set, and {where} needs an API key",
        f"export {env_var}=<your key>, or set api_key_env to the variable that holds it "
        "(servers on localhost need no key)",
    )
