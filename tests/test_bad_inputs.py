"""The bad-input suite (table: tests/bad_inputs.py): every case is refused with a one-line message naming the file or
key, before any work, and leaves the sandbox as it was; a few through a real command line (exit status 1, never 134).

Bundle entry points run in-process as ``python -m monai.bundle run`` runs them (``ConfigWorkflow`` initialize, run,
finalize, the same overrides); converters through their scripts' ``main``. The tiny set-up is built once per module
and copied per case.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import io
import re
import subprocess
import sys
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

import bad_inputs
from crln_monai.overrides import run_command
from bad_inputs import CASES, CONFIGS, ENTRY_POINTS, ISSUE_ITEMS, REPO, BadInput, Sandbox

RUN = [c for c in CASES if c.setup is not None]
PROVED = [c for c in CASES if c.proved_by is not None]
CLI = [c for c in RUN if c.cli]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return bad_inputs.build_pristine(tmp_path_factory.mktemp("bad_inputs") / "pristine")


@pytest.fixture
def sandbox(pristine, tmp_path) -> Sandbox:
    return bad_inputs.make_sandbox(pristine, tmp_path / "case")


# ------------------------------------------------------------------------------------------------------- running


def _script(name: str):
    return bad_inputs.script_module(name)


def _bundle_overrides(sb: Sandbox) -> dict[str, Any]:
    # run/ holds a previous run (model.pt, model_last.pt), which a fresh training replaces only with --overwrite
    # True; the cases prove that even then a refused run leaves it as it was
    return {"bundle_root": str(sb.run), "dataset_dir": str(sb.data), "overwrite": True, **sb.overrides}


def _run_in_process(entry: str, sb: Sandbox, built: dict[str, Any] | None = None) -> None:
    """What ``python -m monai.bundle run <entry>`` (or ``python scripts/<converter>.py``) does, in this process;
    ``built["workflow"]`` receives the bundle workflow."""
    if entry == "conversion":
        _script(sb.script).main(sb.argv)
        return
    if entry == "planning":  # as `python -m crln_monai.plan`: its status becomes the exit status
        from crln_monai.plan.__main__ import main as plan_main

        status = plan_main(sb.plan_argv)
        if status:
            raise SystemExit(status)
        return
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / f"{name}.json") for name in ENTRY_POINTS[entry]],
        meta_file=str(CONFIGS / "metadata.json"), logging_file=False, run_id=entry, **_bundle_overrides(sb),
    )  # fmt: skip
    if built is not None:
        built["workflow"] = workflow
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _command(entry: str, sb: Sandbox) -> list[str]:
    if entry == "conversion":
        return [sys.executable, str(REPO / "scripts" / f"{sb.script}.py"), *sb.argv]
    if entry == "planning":
        return [sys.executable, "-m", "crln_monai.plan", *sb.plan_argv]
    files = [CONFIGS / f"{name}.json" for name in ENTRY_POINTS[entry]]
    return run_command(
        entry, files, _bundle_overrides(sb), meta_file=CONFIGS / "metadata.json", logging_file=CONFIGS / "logging.conf"
    )


def _failure(call: Callable[[], None]) -> tuple[BaseException | None, str]:
    """The exception ``call`` ends with (a ``SystemExit`` only with a non-zero status) and what it wrote to stderr."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            call()
    except SystemExit as e:
        return (e if e.code not in (0, None) else None), stderr.getvalue()
    except Exception as e:
        return e, stderr.getvalue()
    return None, stderr.getvalue()


def _messages(error: BaseException) -> list[str]:
    """The messages of an exception and of its causes (MONAI wraps an expression's error in a RuntimeError)."""
    messages, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        messages.append(str(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return messages


def _pattern(case: BadInput, sb: Sandbox) -> str:
    pattern = case.message
    for token, path in sb.tokens().items():
        pattern = pattern.replace("{" + token + "}", re.escape(str(path)))
    return pattern


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _written(before: dict[str, str], root: Path, may_write: tuple[str, ...]) -> list[str]:
    """Files created, changed or removed since ``before``, other than those ``may_write`` allows."""
    after = _snapshot(root)
    changed = [f"{p} (new)" for p in after if p not in before]
    changed += [f"{p} (changed)" for p in after if p in before and after[p] != before[p]]
    changed += [f"{p} (removed)" for p in before if p not in after]
    return [c for c in changed if not any(fnmatch(c.rsplit(" ", 1)[0], glob) for glob in may_write)]


# ---------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", RUN, ids=[c.id for c in RUN])
def test_bad_input_is_refused_in_one_line_before_any_work(case: BadInput, sandbox: Sandbox):
    case.setup(sandbox)
    before = _snapshot(sandbox.root)
    built: dict[str, Any] = {}
    error, stderr = _failure(lambda: _run_in_process(case.entry, sandbox, built))
    assert error is not None, f"{case.id}: {case.entry} ran to the end without an error (silently wrong)"
    messages = _messages(error) + stderr.splitlines()
    pattern = _pattern(case, sandbox)
    matching = [m for m in messages if re.search(pattern, m)]
    assert matching, f"{case.id}: no message matches {pattern!r}; got {messages}"
    assert any("\n" not in m for m in matching), f"{case.id}: the message is not one line: {matching}"
    written = _written(before, sandbox.root, case.may_write)
    assert not written, f"{case.id}: must leave {case.untouched!r}, but wrote {written}"
    if case.entry == "training" and not case.while_loading:  # refused before the data set is loaded (cached)
        resolved = built["workflow"].parser.ref_resolver.resolved_content
        assert "train::preprocessing" not in resolved, f"{case.id}: refused only when the data set was loaded"


EXIT_STATUS = {"planning": 2}
"""Exit status of a refused command line: 1 (a bundle run's or a converter's exception), 2 for ``crln-plan``."""


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_bad_input_on_the_command_line_exits_with_status_1(case: BadInput, sandbox: Sandbox):
    case.setup(sandbox)
    before = _snapshot(sandbox.root)
    result = subprocess.run(_command(case.entry, sandbox), capture_output=True, text=True, timeout=300, cwd=sandbox.root)
    output = result.stdout + result.stderr
    expected = EXIT_STATUS.get(case.entry, 1)
    assert result.returncode == expected, f"{case.id}: exit status {result.returncode}\n{output[-3000:]}"
    assert "terminate called" not in output
    pattern = _pattern(case, sandbox)
    assert any(re.search(pattern, line) for line in output.splitlines()), f"{case.id}: {pattern!r}\n{output[-3000:]}"
    assert not _written(before, sandbox.root, case.may_write)


_OUTPUTS = {  # what a successful run of the unbroken sandbox writes: the files the cases' guard watches
    "training": ["run/models/model_last.pt", "run/models/resume.pt", "run/eval/history.csv"],
    "evaluating": ["run/eval/summary.md", "run/eval/per_case.csv"],
    "inference": ["run/predictions/case_004_seg.nii.gz", "run/predictions/case_005_seg.nii.gz"],
    "conversion": ["out/dataset.json", "out/imagesTr/caseA.nii.gz", "out/labelsTr/caseC.nii.gz"],
    "planning": ["plan.json"],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_the_unbroken_sandbox_runs_and_writes_what_the_cases_must_not(entry: str, sandbox: Sandbox):
    """The control: without a break each entry point succeeds and writes the files the guard watches."""
    before = _snapshot(sandbox.root)
    error, _ = _failure(lambda: _run_in_process(entry, sandbox))
    assert error is None, f"{entry}: {_messages(error)}"
    written = {c.rsplit(" ", 1)[0] for c in _written(before, sandbox.root, ())}
    assert set(_OUTPUTS[entry]) <= written, sorted(written)


@pytest.mark.parametrize("case", PROVED, ids=[c.id for c in PROVED])
def test_resume_guarantees_point_to_a_test_that_exists(case: BadInput):
    file, name = case.proved_by.split("::")
    tree = ast.parse((REPO / file).read_text())
    assert name in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, case.proved_by


def _names() -> set[str]:
    """Config keys, converter and plan arguments and the sandbox's case ids: what a message may name instead of a
    file."""
    import inspect

    from crln_monai.workflow import SCHEMA
    from crln_monai.data import convert
    from crln_monai.plan.__main__ import _parser as plan_parser

    arguments = {a for f in (convert.prepare_la, convert.prepare_pancreas_ct, convert.prepare_brats19)
                 for a in inspect.signature(f).parameters}  # fmt: skip
    arguments |= {action.dest for action in plan_parser()._actions}
    cases = {f"case_{i:03d}" for i in range(bad_inputs.CASES_IN_DATA)} | {"caseA", "caseB", "caseC", "caseZ"}
    return set(SCHEMA) | arguments | cases


_NAMES = _names()


def test_the_table_covers_every_entry_point_and_every_issue_item():
    counts = {entry: sum(c.entry == entry for c in RUN) for entry in ENTRY_POINTS}
    assert len(RUN) >= 60 and min(counts.values()) >= 10, counts
    covered = {item for c in CASES for item in c.items}
    assert set(ISSUE_ITEMS) <= covered, sorted(set(ISSUE_ITEMS) - covered)
    assert 3 <= len(CLI) <= 5 and {c.entry for c in CLI} == set(ENTRY_POINTS)
    for case in RUN:  # the message names the file (a sandbox path, a case id) or the key / argument
        words = set(re.findall(r"\w+", case.message))
        named = re.search(r"\{(data|run|root|src|out)\}|unknown (config key|option) ", case.message)
        assert named or words & _NAMES, case.id


def test_docs_reliability_md_is_up_to_date_with_the_table():
    spec = importlib.util.spec_from_file_location("reliability_table", REPO / "tools" / "reliability_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert tool.update(doc, CASES) == doc, "docs/reliability.md is out of date: run python tools/reliability_table.py"
