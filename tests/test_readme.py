"""The README's generated sections (all scenario options, the trace schema) match the code."""

from __future__ import annotations

import re
from pathlib import Path

from recnet.cli import options_doc
from recnet.trace import schema

README = Path(__file__).resolve().parents[1] / "README.md"
REGENERATE = (
    "python -c \"import re; from recnet.cli import options_doc as o; p='README.md'; "
    "s=open(p).read(); b=o.markdown(o.option_sections(), heading='####'); "
    "open(p,'w').write(re.sub(r'<!-- options:start -->\\n.*?<!-- options:end -->', "
    "lambda m: '<!-- options:start -->\\n'+b+'<!-- options:end -->', s, flags=re.S))\""
)


def section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, flags=re.S)
    assert match, f"README lacks the {name} markers"
    return match.group(1)


def test_readme_lists_every_option_as_the_code_defines_it() -> None:
    expected = options_doc.markdown(options_doc.option_sections(), heading="####")
    assert section("options") == expected, f"README options are stale; run: {REGENERATE}"


def test_readme_documents_every_trace_table() -> None:
    documented = section("trace-schema")
    missing = [name for name in schema.metadata.tables if f"`{name}`" not in documented]
    assert not missing, f"README's Trace schema does not describe: {missing}"


def test_readme_states_the_two_setup_commands_and_the_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert "pip install -e ." in text
    assert "recnet simulate scenarios/movielens.yaml" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in text and "python -m pytest" in ci
