#!/usr/bin/env python
"""Write the bad-input table of ``tests/bad_inputs.py`` into ``docs/reliability.md``, between the marker comments
``<!-- bad-inputs:start -->`` and ``<!-- bad-inputs:end -->`` (the table is defined once, in the suite).

Usage: ``python tools/reliability_table.py`` (rewrites the doc); ``--check`` only says whether it is up to date
(exit status 1 if not). ``tests/test_bad_inputs.py`` fails when the committed doc differs from the table.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"

TITLES = {
    "training": "Training: `python -m monai.bundle run training`",
    "evaluating": "Evaluation: `python -m monai.bundle run evaluating`",
    "inference": "Inference: `python -m monai.bundle run inference`",
    "conversion": "Conversion: `python scripts/prepare_{la,pancreas_ct,brats19}.py`",
    "planning": "Planning: `python -m crln_monai.plan` (`crln-plan`)",
}


def load_cases() -> list[Any]:
    """``tests/bad_inputs.CASES``."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import bad_inputs
    finally:
        sys.path.pop(0)
    return list(bad_inputs.CASES)


def readable(pattern: str) -> str:
    """A message regex as a reader sees the message: ``{data}`` -> ``<data>``, ``.*`` -> ``…``, no escapes."""
    text = re.sub(r"\{(data|run|root|src|out)\}", r"<\1>", pattern)
    text = text.replace(".*", "…")
    return re.sub(r"\\(.)", r"\1", text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return "`" + _cell(text).replace("`", "'") + "`"


def _items(items: Sequence[int]) -> str:
    return ", ".join(map(str, items))


def render(cases: Sequence[Any]) -> str:
    """The generated part of the doc: a count line, one table per entry point, the resume guarantees."""
    refused = [c for c in cases if c.proved_by is None]
    proved = [c for c in cases if c.proved_by is not None]
    entries = list(TITLES)
    counts = ", ".join(f"{entry} {sum(c.entry == entry for c in refused)}" for entry in entries)
    cli = [c.id for c in refused if c.cli]
    lines = [
        f"{len(refused)} bad inputs ({counts}), each refused with a clear error; {len(cli)} of them also through a "
        f"real command line ({', '.join(f'`{i}`' for i in cli)}): exit status 1 (2 for `crln-plan`). {len(proved)} "
        "resume guarantees are proved by the kill-and-resume tests. `<data>`, `<run>` (the `bundle_root`), `<src>`, "
        "`<out>`, "
        "`<root>` stand for the test's folders; `…` for the part of the message not shown.",
        "",
    ]
    for entry in entries:
        rows = [c for c in refused if c.entry == entry]
        lines += [f"### {TITLES[entry]} ({len(rows)} cases)", ""]
        lines += ["| case | input | refused with (message fragment) | nothing written | issue 10 item |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for c in rows:
            untouched = c.untouched + (f" (may write: {', '.join(c.may_write)})" if c.may_write else "")
            lines.append(
                f"| `{c.id}` | {_cell(c.input)} | {_code(readable(c.message))} | {_cell(untouched)} | {_items(c.items)} |"
            )
        lines.append("")
    lines += ["### Resume guarantees (proved by the kill-and-resume tests)", ""]
    lines += ["| case | situation | guarantee | kept | issue 10 item | proved by |", "| --- | --- | --- | --- | --- | --- |"]
    for c in proved:
        lines.append(
            f"| `{c.id}` | {_cell(c.input)} | {_cell(c.message)} | {_cell(c.untouched)} | {_items(c.items)} | "
            f"`{c.proved_by}` |"
        )
    return "\n".join(lines)


def update(doc: str, cases: Sequence[Any] | None = None) -> str:
    """``doc`` with the text between the markers replaced by :func:`render` of ``cases`` (default: the suite's)."""
    if START not in doc or END not in doc or doc.index(START) > doc.index(END):
        raise ValueError(f"docs/reliability.md must hold {START} ... {END} once, in that order.")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    table = render(load_cases() if cases is None else cases)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the doc is up to date")
    args = parser.parse_args(argv)
    doc = DOC.read_text()
    updated = update(doc)
    if args.check:
        if updated != doc:
            print(f"{DOC.relative_to(REPO)} is out of date: run python tools/reliability_table.py")
            return 1
        return 0
    if updated != doc:
        DOC.write_text(updated)
        print(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
