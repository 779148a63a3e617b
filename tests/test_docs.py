"""Every documentation reference in the repository resolves inside the repository.

The method notes the project started from (the shared METHOD, PLANNING, MONAI and DESIGN notes) are not part of the
repository, so a docstring, comment, config description or document citing them sends readers nowhere. These tests
refuse such citations, and check that every ``docs/<name>.md`` a file cites exists and that every
``docs/<name>.md#anchor`` (and every Markdown link between the pages of ``docs/``) names a heading of that page.
Text files only, read once; no import of the package.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("crln_monai", "scripts", "tools", "tests", "bundles", "docs")
SCANNED_FILES = ("README.md",)
TEXT_SUFFIXES = {".py", ".json", ".md", ".yml", ".yaml", ".conf", ".sh", ".txt", ".cfg", ".toml"}
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", "measurements"}
MAX_BYTES = 2_000_000

# The shared notes by file name, and the short citation forms used for them: a note's name followed by a section
# sign, an ambiguity id (A1-A20), a table or an equation number. Built from parts so that this file does not match
# itself.
_NOTES = "|".join(("METH" + "OD", "PLANN" + "ING", "MON" + "AI", "DESI" + "GN", "PEE" + "RS"))
_SHORT = "|".join(("METH" + "OD", "PLANN" + "ING", "DESI" + "GN"))
SHARED_NOTE = re.compile(
    rf"\b(?:{_NOTES})\.md\b"  # a note by its file name
    rf"|\b(?:{_SHORT})(?:'s)?\s*(?:§|A\d{{1,2}}\b|Tables?\s+\d|Eqs?\.\s*\(?\d)"  # a note by its short name
    r"|shared/" r"docs/"  # the folder of the notes, beside the checkout
)
# A citation of a repository page: ``docs/<name>.md`` not preceded by another path part (``bundles/la/docs/...`` and
# the export's ``docs/README.md`` model card are other files), with an optional ``#anchor``.
DOC_CITATION = re.compile(r"(?<![\w./-])docs/([A-Za-z0-9_-]+)\.md(?:#([A-Za-z0-9_-]+))?")
# Markdown links inside docs/*.md: ``](other.md#anchor)`` and ``](#anchor)``.
RELATIVE_LINK = re.compile(r"\]\((?:([A-Za-z0-9_-]+)\.md)?(?:#([A-Za-z0-9_-]+))?\)")
MODEL_CARD = "README"


def _text_files() -> list[Path]:
    files = [REPO / name for name in SCANNED_FILES if (REPO / name).is_file()]
    for folder in SCANNED_DIRS:
        for path in sorted((REPO / folder).rglob("*")):
            if (
                path.suffix in TEXT_SUFFIXES
                and path.is_file()
                and not SKIPPED_PARTS.intersection(path.relative_to(REPO).parts)
                and path.stat().st_size <= MAX_BYTES
            ):
                files.append(path)
    return files


@lru_cache(maxsize=None)
def _texts() -> tuple[tuple[str, str], ...]:
    out = []
    for path in _text_files():
        try:
            out.append((path.relative_to(REPO).as_posix(), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return tuple(out)


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def _anchors(page: str) -> frozenset[str]:
    """Anchors of the headings of ``docs/<page>.md`` (duplicates numbered as GitHub numbers them)."""
    path = REPO / "docs" / f"{page}.md"
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def test_github_slug_matches_githubs_rules():
    assert github_slug("Differences from the paper and the authors' code") == (
        "differences-from-the-paper-and-the-authors-code"
    )
    assert github_slug("2-D (slice-wise) configuration") == "2-d-slice-wise-configuration"
    assert github_slug("`StrongAugment` steps") == "strongaugment-steps"


def test_no_citation_of_notes_outside_the_repository():
    """No file cites the shared notes, which readers of the repository do not have."""
    hits = [
        f"{name}:{_line(text, m.start())}: {m.group(0)!r}"
        for name, text in _texts()
        for m in SHARED_NOTE.finditer(text)
    ]
    assert not hits, (
        "these cite notes outside the repository; cite docs/method.md (the method, A1–A20), docs/planning.md (plan "
        "rules), docs/design.md (architecture, MONAI facts) or explain inline:\n" + "\n".join(hits)
    )


def test_cited_repository_docs_exist_with_their_anchors():
    """Every ``docs/<name>.md`` cited exists, and a cited ``#anchor`` is one of its headings."""
    missing = []
    for name, text in _texts():
        for m in DOC_CITATION.finditer(text):
            page, anchor = m.group(1), m.group(2)
            if page == MODEL_CARD:
                continue
            where = f"{name}:{_line(text, m.start())}: {m.group(0)}"
            if not (REPO / "docs" / f"{page}.md").is_file():
                missing.append(f"{where} (no such file)")
            elif anchor and anchor not in _anchors(page):
                missing.append(f"{where} (no heading with this anchor)")
    assert not missing, "unresolved documentation references:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", sorted(p.stem for p in (REPO / "docs").glob("*.md")))
def test_links_between_docs_pages_resolve(page):
    """Markdown links of ``docs/<page>.md`` to other pages and to anchors resolve."""
    text = (REPO / "docs" / f"{page}.md").read_text(encoding="utf-8")
    broken = []
    for m in RELATIVE_LINK.finditer(text):
        target, anchor = m.group(1) or page, m.group(2)
        if m.group(1) is None and anchor is None:
            continue
        if not (REPO / "docs" / f"{target}.md").is_file():
            broken.append(f"line {_line(text, m.start())}: {m.group(0)} (no such page)")
        elif anchor and anchor not in _anchors(target):
            broken.append(f"line {_line(text, m.start())}: {m.group(0)} (no heading with this anchor)")
    assert not broken, f"docs/{page}.md:\n" + "\n".join(broken)


def test_method_page_is_listed_in_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "`docs/method.md`" in readme.split("## Documentation", 1)[-1]
