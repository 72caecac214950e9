"""The documentation: every relative link and #anchor resolves, and the README stays short.

Anchors are checked as a code host renders them (GitHub's heading slugs), so a
renamed heading or a moved file shows here rather than as a dead link.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 260
COMMANDS_WITHIN_LINES = 30

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may carry a "title".
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.target}"


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the Markdown outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def heading_text(markdown: str) -> str:
    """A heading as rendered text: code spans keep their content, links their text."""
    text = _CODE_SPAN.sub(lambda match: match.group(2), markdown)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\*{1,2}(\S.*?\S|\S)\*{1,2}", r"\1", text)
    # Underscores inside a word (KPI_RESTATE_DAYS) are not emphasis.
    return re.sub(r"(?<!\w)_{1,2}(\S.*?\S|\S)_{1,2}(?!\w)", r"\1", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading_text(heading).strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a code host gives ``page``: heading slugs (repeats numbered) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(page.read_text()):
        found.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        repeat = seen.get(base, 0)
        seen[base] = repeat + 1
        found.add(base if repeat == 0 else f"{base}-{repeat}")
    return found


def links(page: Path) -> Iterator[Link]:
    """The relative links and images of ``page``, outside code."""
    for number, line in prose_lines(page.read_text()):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if not _EXTERNAL.match(target):
                yield Link(page, number, target)


def broken(link: Link) -> str | None:
    """Why ``link`` does not resolve, or None when it does."""
    path, _, anchor = link.target.partition("#")
    target = (link.page.parent / unquote(path)).resolve() if path else link.page
    if not target.is_relative_to(ROOT):
        return "points outside the repository"
    if not target.exists():
        return "no such file"
    if anchor and target.suffix == ".md" and unquote(anchor) not in anchors(target):
        return f"no heading with the anchor #{anchor} in {target.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    failures = [f"{link}: {reason}" for link in links(page) if (reason := broken(link))]
    assert not failures, "\n".join(failures)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / link.target.partition("#")[0]).resolve()
        for link in links(README)
        if not link.target.startswith("#")
    }
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_readme_fits_on_a_screen_or_two() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_gives_the_two_commands_first() -> None:
    head = README.read_text().splitlines()[:COMMANDS_WITHIN_LINES]
    commands = [line.split("#")[0].strip() for line in head]
    assert "make demo" in commands
    assert "make test" in commands


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("MySQL / MariaDB", "mysql--mariadb"),
        ("An idle run over 100,000 processed files", "an-idle-run-over-100000-processed-files"),
        ("At an operator's volume (`bench/scale.py`)", "at-an-operators-volume-benchscalepy"),
        (
            "Files that arrive late, twice, changed or not at all",
            "files-that-arrive-late-twice-changed-or-not-at-all",
        ),
        ("The [restatement window](operations.md) *now*", "the-restatement-window-now"),
        ("KPI_RESTATE_DAYS", "kpi_restate_days"),
        ("_Late_ and **changed** files", "late-and-changed-files"),
    ],
)
def test_slugs_are_those_of_the_code_host(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_it_reports_a_missing_file_and_a_missing_anchor() -> None:
    page = ROOT / "docs" / "input.md"
    assert broken(Link(page, 1, "operations.md#the-restatement-window")) is None
    assert broken(Link(page, 1, "#kpi-definitions")) is None
    assert broken(Link(page, 1, "../README.md")) is None
    assert broken(Link(page, 1, "no-such-page.md")) == "no such file"
    assert broken(Link(page, 1, "operations.md#no-such-heading")) == (
        "no heading with the anchor #no-such-heading in docs/operations.md"
    )
    assert broken(Link(page, 1, "../../outside.md")) == "points outside the repository"


def test_it_numbers_repeated_headings_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n## Part\n## Part\n```sh\n# not a heading\n[x](missing.md)\n```\n"
        "See `[y](missing.md)` and [z](#part-1).\n"
    )
    assert anchors(page) == {"title", "part", "part-1"}
    assert [link.target for link in links(page)] == ["#part-1"]
