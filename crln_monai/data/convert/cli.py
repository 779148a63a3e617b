"""``run_converter``: the command line of the ``scripts/prepare_*.py`` converters, with its options checked first.

python-fire calls a function with the arguments it recognises and only afterwards reports the ones it could not
use ("ERROR: Could not consume arg: --ua_mt_cropp"), so a misspelt option would convert the whole data set with
the option's default before the error. :func:`run_converter` refuses an option the converter does not take, naming
it and the closest ones, before anything runs; the rest is ``fire.Fire``.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CONVERTERS",
    "console_main",
    "converter_main",
    "prepare_brats19_main",
    "prepare_la_main",
    "prepare_pancreas_ct_main",
    "run_converter",
    "unknown_options",
]


def unknown_options(function: Callable[..., Any], argv: Sequence[str]) -> list[str]:
    """The ``--options`` of ``argv`` that ``function`` does not take (fire's ``--name=value``, ``--name value``,
    ``--noname`` for a switch and ``-`` for ``_`` included); none after a bare ``--`` (fire's own flags)."""
    parameters = inspect.signature(function).parameters
    unknown = []
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("--") or len(arg) == 2:
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name in parameters or name == "help" or (name.startswith("no") and name[2:] in parameters):
            continue
        unknown.append(arg.split("=", 1)[0])
    return unknown


def run_converter(function: Callable[..., Any], argv: Sequence[str] | None, name: str) -> None:
    """``fire.Fire(function)`` on ``argv`` (default ``sys.argv[1:]``) once every ``--option`` is one it takes.

    Raises:
        ValueError: ``<name>: unknown option --x (did you mean --y?); the options are --a, --b, ...``.
    """
    import fire

    command = list(sys.argv[1:] if argv is None else argv)
    unknown = unknown_options(function, command)
    if unknown:
        options = list(inspect.signature(function).parameters)
        parts = []
        for option in unknown:
            close = difflib.get_close_matches(option[2:].replace("-", "_"), options, n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join('--' + c for c in close)}?)" if close else ""
            parts.append(f"unknown option {option}{hint}")
        raise ValueError(f"{name}: {'; '.join(parts)}; the options are {', '.join('--' + o for o in options)}.")
    fire.Fire(function, command=command, name=name, serialize=str)


CONVERTERS: dict[str, str] = {"la": "prepare_la", "pancreas_ct": "prepare_pancreas_ct", "brats19": "prepare_brats19"}
"""Data set name → converter function of :mod:`crln_monai.data.convert` (the console scripts' names follow)."""


def converter_main(dataset: str, argv: Sequence[str] | None = None) -> None:
    """Run the converter of ``dataset`` (a key of :data:`CONVERTERS`) on ``argv`` (default ``sys.argv[1:]``)."""
    from crln_monai.data import convert

    if dataset not in CONVERTERS:
        raise ValueError(f"unknown data set {dataset!r}; the converters are {', '.join(CONVERTERS)}.")
    name = CONVERTERS[dataset]
    run_converter(getattr(convert, name), argv, name)


def console_main(dataset: str, argv: Sequence[str] | None = None) -> None:
    """:func:`converter_main` for a console script: a refused input ends with its one-line message and status 1."""
    try:
        converter_main(dataset, argv)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        raise SystemExit(f"error: {e}") from None


def prepare_la_main() -> None:
    """``crln-prepare-la``: UA-MT h5 or challenge NRRD files → NIfTI Decathlon folder."""
    console_main("la")


def prepare_pancreas_ct_main() -> None:
    """``crln-prepare-pancreas-ct``: TCIA DICOM + NIfTI labels → NIfTI Decathlon folder."""
    console_main("pancreas_ct")


def prepare_brats19_main() -> None:
    """``crln-prepare-brats19``: BraTS 2019 folders → NIfTI Decathlon folder."""
    console_main("brats19")
