"""The repository's Markdown and Rust comments refer only to files that are in it.

In every file git tracks:

* **Markdown links** (``*.md``): every relative link target -- ``[text](target)``, images,
  reference definitions ``[label]: target``, HTML ``href``/``src`` -- is a file or directory,
  relative to the Markdown file, and a ``#fragment`` into a Markdown file (or into the same one)
  is one of its headings, spelled as GitHub spells heading anchors. Links inside code are not
  links; ``http(s):``, ``mailto:`` and other URLs are not checked.
* **Links in Rust comments** (``//``, ``///``, ``//!``, ``/* */``; never string literals): the
  same, from the Rust file's directory or the repository root; rustdoc paths (``crate::x``) are
  not files.
* **Paths named in either**, linked or not (``src/sniff/pipeline.rs``, ``docs/design.md``,
  ``tests/data/tls/*.bin``, ``src/sniff/{mod,pipeline}.rs``: a name with a ``/`` and a file
  extension the repository uses): some tracked file matches, from the repository root, from the
  naming file's directory, or as the end of a tracked path (``filter/stream.rs`` in
  ``src/session/``).
* **No DESIGN.md**: no tracked text file but this one mentions it. There is none in the
  repository; the project's design document is ``docs/design.md``. (Every text file is read, not
  only Markdown and Rust: bench/report.py writes docs/BENCHMARKS.md.)

Nothing here needs Envoy. The last test shows each check can fail.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from harness import REPO

THIS = Path(__file__).resolve()
FORBIDDEN = "DESIGN.md"

# File extensions the repository's files have: a name with a `/` that ends in one is a path.
EXTENSIONS = "rs|md|py|json|yaml|yml|toml|sh|txt|mjs|png|bin|lock"
PATH_RE = re.compile(
    r"(?<![\w./~$-])"                       # not inside a longer path, URL or word
    r"((?:\.{1,2}/)*(?:[\w.{},*-]+/)+[\w.{},*-]*\.(?:" + EXTENSIONS + r"))"
    r"(?![\w/-])")
SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
INLINE_LINK_RE = re.compile(r"\]\(\s*<?([^()\s<>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_RE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s<>]+)>?", re.M)
HTML_RE = re.compile(r"\b(?:href|src)\s*=\s*\"([^\"]*)\"")
FENCE_RE = re.compile(r"^ {0,3}(```|~~~)[^\n]*\n.*?^ {0,3}\1[^\n]*$", re.S | re.M)
CODE_SPAN_RE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
RAW_STRING_RE = re.compile(r"b?r(#*)\"")
LEADING_DOTS_RE = re.compile(r"^(?:\.\.?/)+")


# --------------------------------------------------------------------------------------------
# What the repository holds
# --------------------------------------------------------------------------------------------


def tracked(repo: Path = REPO) -> list[str]:
    """Every file git tracks, as repository-relative POSIX paths (that exist in the worktree)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True,
                         capture_output=True).stdout.decode()
    return sorted(p for p in out.split("\0")
                  if p and (repo / p).is_file())


def directories(files: list[str]) -> set[str]:
    """Every directory that holds a tracked file (and "" for the root)."""
    dirs = {""}
    for f in files:
        parent = PurePosixPath(f).parent
        while str(parent) != ".":
            dirs.add(str(parent))
            parent = parent.parent
    return dirs


def text_of(path: Path) -> str | None:
    """The file's text, or None if it is not UTF-8 text."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------------------------
# Reading Markdown and Rust
# --------------------------------------------------------------------------------------------


def blank(match: re.Match[str]) -> str:
    """The match replaced by spaces, line breaks kept (so line numbers stay right)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def markdown_prose(text: str) -> str:
    """Markdown without its code: fenced blocks and code spans blanked out."""
    return CODE_SPAN_RE.sub(blank, FENCE_RE.sub(blank, text))


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def markdown_links(text: str) -> Iterator[tuple[int, str]]:
    """(line, target) of every link in Markdown text, code excluded."""
    prose = markdown_prose(text)
    for regex in (INLINE_LINK_RE, REFERENCE_RE, HTML_RE):
        for m in regex.finditer(prose):
            yield line_of(prose, m.start(1)), m.group(1)


def rust_comments(text: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every comment line in Rust source; string and char literals skipped."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield line, text[i:end]
            i = end
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            for k, part in enumerate(text[i:j].split("\n")):
                yield line + k, part
            line += text.count("\n", i, j)
            i = j
        elif (raw := RAW_STRING_RE.match(text, i)) and (i == 0 or not (
                text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + raw.group(1)
            end = text.find(close, raw.end())
            end = n if end < 0 else end + len(close)
            line += text.count("\n", i, end)
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            line += text.count("\n", i, j)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{7f}', '\'') or a lifetime ('a, 'static).
            if text.startswith("\\", i + 1):
                end = text.find("'", i + 3)
                i = n if end < 0 else end + 1
            elif i + 2 < n and text[i + 2] == "'":
                i += 3
            else:
                i += 1
        else:
            i += 1


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file: its headings' (with GitHub's -1, -2 for repeats) and
    explicit ``id``/``name`` attributes."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for m in re.finditer(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", FENCE_RE.sub(blank, text), re.M):
        base = slug(m.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(re.findall(r"\b(?:id|name)\s*=\s*\"([^\"]+)\"", text))
    return found


# --------------------------------------------------------------------------------------------
# The checks, on any (path, text): each returns its complaints
# --------------------------------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """``src/{a,b}.rs`` -> ``src/a.rs``, ``src/b.rs`` (innermost groups first, nested allowed)."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [out for alt in m.group(1).split(",")
            for out in expand_braces(pattern[:m.start()] + alt + pattern[m.end():])]


def names_a_tracked_file(mention: str, where: str, files: list[str]) -> bool:
    """Whether a path named in the file ``where`` matches a tracked file (see the module doc);
    with ``{a,b}``, every alternative must."""
    here = str(PurePosixPath(where).parent)

    def found(pattern: str) -> bool:
        local = os.path.normpath(os.path.join(here, pattern)).replace(os.sep, "/")
        tail = "*/" + LEADING_DOTS_RE.sub("", pattern)
        return any(fnmatch.fnmatchcase(f, pattern) or fnmatch.fnmatchcase(f, local)
                   or fnmatch.fnmatchcase(f, tail) for f in files)

    return all(found(pattern) for pattern in expand_braces(mention))


def check_link(target: str, where: str, files: list[str], texts: dict[str, str],
               also_from_root: bool = False) -> str | None:
    """Why a link in the file ``where`` is broken, or None. ``texts``: Markdown by path, for
    anchors."""
    if SCHEME_RE.match(target) or target.startswith("//"):
        return None   # a URL
    path, _, fragment = target.partition("#")
    path = path.split("?", 1)[0]
    dirs = directories(files)
    if path:
        bases = [str(PurePosixPath(where).parent)] + ([""] if also_from_root else [])
        resolved = None
        for base in bases:
            candidate = os.path.normpath(os.path.join(base, path)).replace(os.sep, "/")
            candidate = "" if candidate == "." else candidate
            if candidate in files or candidate in dirs:
                resolved = candidate
                break
        if resolved is None:
            return f"{target!r}: no such file or directory in the repository"
    else:
        resolved = where
    if fragment and resolved.endswith(".md"):
        known = anchors(texts.get(resolved, ""))
        if fragment not in known:
            return f"{target!r}: {resolved} has no heading #{fragment}"
    return None


def markdown_problems(where: str, text: str, files: list[str], texts: dict[str, str]
                      ) -> Iterator[str]:
    for line, target in markdown_links(text):
        why = check_link(target, where, files, texts)
        if why:
            yield f"{where}:{line}: link {why}"


def rust_link_problems(where: str, text: str, files: list[str], texts: dict[str, str]
                       ) -> Iterator[str]:
    for line, comment in rust_comments(text):
        for m in INLINE_LINK_RE.finditer(comment):
            target = m.group(1)
            if "::" in target or not re.search(r"[/.#]", target):
                continue   # a rustdoc path, not a file
            why = check_link(target, where, files, texts, also_from_root=True)
            if why:
                yield f"{where}:{line}: link {why}"


def mentioned_paths(where: str, text: str) -> Iterator[tuple[int, str]]:
    """(line, path) of every path named in a Markdown file or in a Rust file's comments."""
    lines = rust_comments(text) if where.endswith(".rs") else enumerate(text.splitlines(), 1)
    for line, content in lines:
        for m in PATH_RE.finditer(content):
            yield line, m.group(1)


def path_problems(where: str, text: str, files: list[str]) -> Iterator[str]:
    for line, mention in mentioned_paths(where, text):
        if not names_a_tracked_file(mention, where, files):
            yield f"{where}:{line}: names {mention}, which is not in the repository"


def forbidden_mentions(where: str, text: str) -> Iterator[str]:
    for line, content in enumerate(text.splitlines(), 1):
        if FORBIDDEN in content:
            yield (f"{where}:{line}: mentions {FORBIDDEN}, which is not in the repository "
                   "(docs/design.md is the project's design document)")


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> list[str]:
    return tracked()


@pytest.fixture(scope="module")
def markdown(files: list[str]) -> dict[str, str]:
    return {f: (REPO / f).read_text() for f in files if f.endswith(".md")}


@pytest.fixture(scope="module")
def rust(files: list[str]) -> dict[str, str]:
    return {f: (REPO / f).read_text() for f in files if f.endswith(".rs")}


def test_there_is_something_to_check(markdown: dict[str, str], rust: dict[str, str]) -> None:
    assert {"README.md", "docs/design.md", "docs/mapping.md"} <= set(markdown)
    assert "src/session/mod.rs" in rust
    links = [t for text in markdown.values() for _, t in markdown_links(text)]
    assert len(links) > 50, links
    assert len([m for f, text in rust.items() for m in mentioned_paths(f, text)]) > 10


def test_no_file_mentions_design_md(files: list[str]) -> None:
    problems = []
    for f in files:
        if (REPO / f).resolve() == THIS:
            continue
        text = text_of(REPO / f)
        if text is not None:
            problems += forbidden_mentions(f, text)
    assert not problems, "\n".join(problems)


def test_every_relative_markdown_link_exists(files: list[str], markdown: dict[str, str]
                                             ) -> None:
    problems = [p for f, text in markdown.items() for p in markdown_problems(f, text, files,
                                                                             markdown)]
    assert not problems, "\n".join(problems)


def test_every_link_in_a_rust_comment_exists(files: list[str], markdown: dict[str, str],
                                             rust: dict[str, str]) -> None:
    problems = [p for f, text in rust.items()
                for p in rust_link_problems(f, text, files, markdown)]
    assert not problems, "\n".join(problems)


def test_every_path_named_in_markdown_or_rust_comments_exists(
        files: list[str], markdown: dict[str, str], rust: dict[str, str]) -> None:
    problems = [p for f, text in {**markdown, **rust}.items()
                for p in path_problems(f, text, files)]
    assert not problems, "\n".join(problems)


def test_the_design_document_is_linked_from_the_readme(markdown: dict[str, str]) -> None:
    assert "docs/design.md" in [t for _, t in markdown_links(markdown["README.md"])]


def test_the_checks_can_fail() -> None:
    """Each check above reports what it should, and only that, on made-up files."""
    files = ["README.md", "docs/a.md", "src/x/mod.rs", "src/y.rs", "tests/data/z.bin"]
    texts = {"docs/a.md": "# Title\n\n## Two words: `code`\n\n## Two words: `code`\n"}

    md = ("[ok](docs/a.md) [dir](src/x/) [up](./README.md#top-part) [web](https://x.example/a.md)\n"
          "[gone](docs/b.md) [bad anchor](docs/a.md#nope) [anchor](docs/a.md#two-words-code-1)\n"
          "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n"
          "[ref]: src/gone.rs\n<img src=\"docs/missing.png\">\n# Top part\n")
    assert list(markdown_problems("README.md", md, files, {**texts, "README.md": md})) == [
        "README.md:2: link 'docs/b.md': no such file or directory in the repository",
        "README.md:2: link 'docs/a.md#nope': docs/a.md has no heading #nope",
        "README.md:7: link 'src/gone.rs': no such file or directory in the repository",
        "README.md:8: link 'docs/missing.png': no such file or directory in the repository",
    ]

    rs = ('//! See [the doc](../../docs/a.md) and [`Thing`](crate::x::Thing).\n'
          '//! Broken: [gone](../../docs/gone.md), `x/mod.rs`, `src/{x/mod,y}.rs`, '
          '`tests/data/*.bin`.\n'
          'let s = "// not a comment: src/none.rs"; let c = \'"\'; let r = r#"src/no.rs"#;\n'
          "fn f<'a>(x: &'a str) {} // src/old.rs and DESIGN.md\n"
          "/* block: src/z.rs\n   https://example.com/src/web.rs */\n")
    assert list(rust_link_problems("src/x/mod.rs", rs, files, texts)) == [
        "src/x/mod.rs:2: link '../../docs/gone.md': no such file or directory in the repository",
    ]
    assert [p for p in path_problems("src/x/mod.rs", rs, files)] == [
        "src/x/mod.rs:2: names ../../docs/gone.md, which is not in the repository",
        "src/x/mod.rs:4: names src/old.rs, which is not in the repository",
        "src/x/mod.rs:5: names src/z.rs, which is not in the repository",
    ]
    assert [p.split(":")[1] for p in forbidden_mentions("src/x/mod.rs", rs)] == ["4"]

    # GitHub's anchors of the project's own headings.
    assert slug("REGISTRY_ONLY with ServiceEntries → allowlist") == (
        "registry_only-with-serviceentries--allowlist")
    assert slug("Host patterns: ServiceEntry `hosts` and rule `hosts`") == (
        "host-patterns-serviceentry-hosts-and-rule-hosts")
