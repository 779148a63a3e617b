"""The settings a training checkpoint carries, compared with a config's, and the ``--key value`` overrides that
reconcile them; the ``monai.bundle`` command lines built from such overrides.

Training checkpoints hold ``{"model": state_dict, "settings": {"network": ..., "preprocessing": ...,
"class_names": [...]}}`` (the bundle's ``settings`` key: ``network_settings`` are :class:`~crln_monai.networks.CRLN`'s
arguments, ``preprocessing_settings`` those of the preprocessing factories). A config that builds another
network or another preprocessing than the checkpoint was trained with is refused with the differing values
and the command-line overrides that fix it, e.g. ``--use_dim False``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "NETWORK_SETTING_KEYS",
    "SettingDifference",
    "cli_value",
    "describe_differences",
    "override_key",
    "plain",
    "run_command",
    "settings_differences",
]

NETWORK_SETTING_KEYS: dict[str, str] = {
    "use_projection": "use_cps",
    "dim_kwargs.aggregation": "dim_aggregation",
    "dim_kwargs.legacy_query_layout": "legacy_query_layout",
    "dim_kwargs.prototype_residual": "prototype_residual",
    "dim_kwargs.levels": "dim_levels",
    "dim_kwargs.upsample_mixes_classes": "upsample_mixes_classes",
    "dim_kwargs.upsample_init": "dim_upsample_init",
}
"""``network_settings`` entries (dotted paths) whose bundle key has another name; every other entry is set by the
top-level key of its own name (``use_dim`` → ``--use_dim``). ``tests/test_checkpoint_checks.py`` checks this table
against ``bundles/la/configs/train.json``."""


class SettingDifference(NamedTuple):
    """One setting whose checkpoint value differs from the config's.

    Attributes:
        key: the bundle key that sets it (``use_dim``, ``use_cps``, ``normalise``, ``class_names``, ...).
        checkpoint: the value the checkpoint was trained with.
        config: the value the config gives.
    """

    key: str
    checkpoint: Any
    config: Any


def plain(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts (recursively), so that equal settings compare equal."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: plain(value)}


def override_key(section: str, path: str) -> str:
    """The bundle key (command-line override) that sets one setting.

    Args:
        section: ``"network"``, ``"preprocessing"`` or ``"class_names"``.
        path: the setting inside its section, dotted for nested ones (``"dim_kwargs.aggregation"``).
    """
    if section == "network":
        if path in NETWORK_SETTING_KEYS:
            return NETWORK_SETTING_KEYS[path]
        return path if "." not in path else "network_settings::" + path.replace(".", "::")
    if section == "preprocessing":
        return path if "." not in path else "preprocessing_settings::" + path.replace(".", "::")
    return section if not path else f"{section}::{path.replace('.', '::')}"


def settings_differences(checkpoint: Mapping[str, Any], config: Mapping[str, Any]) -> list[SettingDifference]:
    """The settings recorded in both ``checkpoint`` and ``config`` whose values differ, in ``config``'s order.

    A setting recorded on one side only (a checkpoint of an older or newer crln-monai) is not compared; the
    state-dict check that follows catches a network it does not fit.

    Args:
        checkpoint: the checkpoint's ``settings``: ``{"network": {...}, "preprocessing": {...},
            "class_names": [...]}``.
        config: the config's ``settings``, same layout.
    """
    differences = []
    for section, value in config.items():
        if section not in checkpoint:
            continue
        ours, theirs = _flatten(value), _flatten(checkpoint[section])
        for path, config_value in ours.items():
            if path in theirs and theirs[path] != config_value:
                differences.append(SettingDifference(override_key(section, path), theirs[path], config_value))
    return differences


def _literal(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_literal(str(k))}:{_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return repr(value)


def cli_value(value: Any, quote: bool = True) -> str:
    """``value`` as python-fire reads it back from a ``monai.bundle run`` command line.

    ``True``, ``None``, ``3``, ``zscore`` are written bare; lists and dicts as Python literals without spaces
    (``[112,112,80]``, ``['background','left atrium']``), in double quotes for the shell when ``quote``.
    """
    if isinstance(value, str) and value and all(c.isalnum() or c in "_-./" for c in value):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    text = _literal(value)
    return f'"{text}"' if quote else text


def run_command(
    run_id: str, config_files: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None, **options: Any
) -> list[str]:
    """``python -m monai.bundle run <run_id> --config_file [...]`` with ``--<key> <value>`` for every option
    (``bundle_root``, ``meta_file``, ...) and override, as an argument list; each value (paths as strings) is written by
    :func:`cli_value` so that python-fire reads back the Python value (``False`` stays a bool, not ``"false"``).
    """
    command = [sys.executable, "-m", "monai.bundle", "run", run_id]
    for key, value in {"config_file": [os.fspath(f) for f in config_files], **options, **(overrides or {})}.items():
        command += [f"--{key}", cli_value(os.fspath(value) if isinstance(value, os.PathLike) else value, quote=False)]
    return command


def describe_differences(source: str, differences: Sequence[SettingDifference]) -> str:
    """One line: what ``source`` was trained with, what the config says, and the overrides to type.

    Example: ``checkpoint m.pt was trained with use_dim=False; the config says use_dim=True: add --use_dim False``.
    """
    trained = ", ".join(f"{d.key}={cli_value(d.checkpoint, quote=False)}" for d in differences)
    config = ", ".join(f"{d.key}={cli_value(d.config, quote=False)}" for d in differences)
    overrides = " ".join(f"--{d.key} {cli_value(d.checkpoint)}" for d in differences)
    return (
        f"{source} was trained with {trained}; the config says {config}: add {overrides} "
        "(or use a checkpoint trained with this config)."
    )
