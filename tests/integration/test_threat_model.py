"""docs/threat-model.md stays tied to the code: the README links it, and the reason and detail
labels it names are labels the source really emits.

The labels are a fixed list (LABELS): each must appear in the threat model in backticks and as
a string literal in src/ (a `labelled!` entry such as ``NumericName => "numeric_name"``). If a
label is renamed or removed in the code, this fails until the threat model says what is true.
Nothing here needs Envoy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
THREAT_MODEL = REPO / "docs" / "threat-model.md"
README = REPO / "README.md"

# Decision reasons, `detail`s and malformed kinds the threat model relies on.
LABELS = [
    # reasons
    "deny_rule",
    "no_match",
    "malformed",
    "too_large",
    "later_request",
    # decisions
    "audit_deny",
    # details / malformed kinds
    "numeric_name",
    "incomplete_at_timeout",
    "upgrade_unanswered",
    "truncated",
    "too_many_pipelined",
    "response_head",
    "response_unasked",
    "response_unasked_switch",
]

INLINE_LINK_RE = re.compile(r"\]\(\s*<?([^()\s<>]+)>?\s*\)")


def source_literals() -> set[str]:
    """Every string literal (the plain `"..."` kind) in the Rust source under src/."""
    found: set[str] = set()
    for path in (REPO / "src").rglob("*.rs"):
        found.update(re.findall(r'"([a-z0-9_]+)"', path.read_text()))
    return found


def test_readme_links_the_threat_model() -> None:
    links = INLINE_LINK_RE.findall(README.read_text())
    assert "docs/threat-model.md" in links


@pytest.mark.parametrize("label", LABELS)
def test_label_is_named_in_the_threat_model(label: str) -> None:
    assert f"`{label}`" in THREAT_MODEL.read_text(), f"docs/threat-model.md never names `{label}`"


@pytest.mark.parametrize("label", LABELS)
def test_label_exists_in_the_source(label: str) -> None:
    assert label in source_literals(), f'no "{label}" string literal in src/'


def test_every_relative_link_of_the_threat_model_exists() -> None:
    for target in INLINE_LINK_RE.findall(THREAT_MODEL.read_text()):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        assert (THREAT_MODEL.parent / path).exists(), f"docs/threat-model.md links {target!r}"


def test_the_table_covers_every_mode() -> None:
    text = THREAT_MODEL.read_text()
    assert "| threat | allowlist | audit | passthrough |" in text


def test_a_missing_label_would_fail() -> None:
    assert "no_such_label_anywhere" not in source_literals()
