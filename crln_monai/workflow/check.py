"""``check_config``: refuse an unknown key or a bad value of a bundle config before any work starts.

Bundle use, first item of ``initialize``::

    "initialize": ["$crln_monai.workflow.check_config()", ...]

How the check reaches the whole config (MONAI 1.6.1): a ``$`` expression only sees the resolved values it
references. ``@`` with an empty id does name the whole config, but resolving it resolves every item of it
(networks, datasets: the very work the check must precede; from ``initialize`` it is even a circular reference),
and a ``%`` macro copies raw content into the config before parsing, where it is parsed and resolved again. So,
called without arguments, :func:`check_config` takes the :class:`~monai.bundle.ConfigParser` that is evaluating
the expression from the call stack (the ``self`` of ``ConfigParser.get_parsed_content``). Its raw config holds
every top-level key after the config files were merged and the command-line overrides applied; values are read
with ``parser.get_parsed_content``, for the typed keys whose values depend on typed keys only, so nothing heavy is
built (the values are cached in the parser, as the run would have resolved them anyway).
"""

from __future__ import annotations

import difflib
import inspect
import reprlib
from collections.abc import Mapping
from typing import Any

from monai.bundle import ConfigComponent, ConfigParser
from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.utils import ID_SEP_KEY

from .flags import check_flags
from .schema import RELATIONS, SCHEMA, KeySpec, Relation

__all__ = ["check_config", "plain_values"]

_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist = 80, 80, 8


def _parser_on_stack() -> ConfigParser:
    """The ConfigParser whose ``get_parsed_content`` is (indirectly) calling us."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ConfigParser):
                return candidate
            frame = frame.f_back
    finally:
        del frame
    raise RuntimeError(
        "check_config() without a config must run inside a bundle expression "
        "(\"$crln_monai.workflow.check_config()\" in initialize); otherwise pass the ConfigParser or a dict."
    )


def plain_values(parser: ConfigParser, schema: Mapping[str, KeySpec] = SCHEMA) -> dict[str, Any]:
    """The resolved values of the typed top-level keys that can be resolved without building anything.

    A key qualifies when it is typed in ``schema`` and its raw content holds no component (``_target_``) and refers
    (``@id``, also inside ``$`` expressions) only to qualifying keys; e.g. ``ckpt_dir = "$@bundle_root + '/models'"``
    does, ``rank = "$dist.get_rank()"`` (structural) and anything reading ``@datalist`` do not.
    """
    raw = parser.get()
    memo: dict[str, bool] = {}

    def plain_key(key: str, seen: frozenset[str]) -> bool:
        if key not in memo:
            spec = schema.get(key)
            ok = spec is not None and not spec.structural and key in raw and key not in seen
            memo[key] = ok and plain_content(raw[key], seen | {key})
        return memo[key]

    def plain_content(value: Any, seen: frozenset[str]) -> bool:
        if isinstance(value, dict):
            if ConfigComponent.is_instantiable(value):
                return False
            return all(plain_content(v, seen) for v in value.values())
        if isinstance(value, list):
            return all(plain_content(v, seen) for v in value)
        if isinstance(value, str):
            refs = ReferenceResolver.match_refs_pattern(value)
            return all(plain_key(ref.split(ID_SEP_KEY)[0], seen) for ref in refs)
        return True

    values = {}
    for key in raw:
        if isinstance(key, str) and plain_key(key, frozenset()):
            try:
                values[key] = parser.get_parsed_content(key)
            except Exception as e:
                cause = e.__cause__ or e
                raise ValueError(
                    f"config key {key!r} could not be evaluated from {_SHOW.repr(raw[key])} "
                    f"({type(cause).__name__}: {cause})"
                ) from e
    return values


def _closest(key: str, known: list[str]) -> list[str]:
    """Up to 3 known keys similar to ``key`` (difflib ratio >= 0.6, case ignored), only those near the best."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, key.lower(), k.lower()).ratio(), k) for k in known), key=lambda s: -s[0]
    )
    best = scored[0][0] if scored else 0.0
    return [k for score, k in scored[:3] if score >= max(0.6, best - 0.1)]


def _unknown(key: Any, known: list[str]) -> str:
    close = _closest(str(key), known)
    if not close:
        return f"unknown config key {key!r} (no similar key; the known keys are crln_monai.workflow.schema.SCHEMA)"
    names = [repr(c) for c in close]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"unknown config key {key!r} (did you mean {listed}?)"


def check_config(
    config: ConfigParser | Mapping[str, Any] | None = None,
    schema: Mapping[str, KeySpec] = SCHEMA,
    relations: tuple[Relation, ...] = RELATIONS,
) -> None:
    """Refuse unknown top-level keys, non-boolean switches, values of the wrong type or range, and inconsistent keys.

    Args:
        config: the bundle's ``ConfigParser`` (default: the one evaluating the calling bundle expression), or a
            mapping of top-level keys to already resolved values (e.g. an override file).
        schema: key -> :class:`~crln_monai.workflow.schema.KeySpec`.
        relations: checks across keys.

    Raises:
        ValueError: one line: each unknown key with the closest known keys (``unknown config key 'num_prototype'
            (did you mean 'num_prototypes'?)``); else each bad value naming the key, the value and what is allowed
            (``config key 'lambda_u' must be a number >= 0.0, got -1``); else each failed relation.
        TypeError: a switch that is not a bool (the message of :func:`~crln_monai.workflow.check_flags`).
    """
    if config is None:
        config = _parser_on_stack()
    if isinstance(config, ConfigParser):
        keys = list(config.get())
    elif isinstance(config, Mapping):
        keys = list(config)
    else:
        raise TypeError(f"check_config takes a ConfigParser or a mapping, got {type(config).__name__}.")

    unknown = [k for k in keys if k not in schema]
    if unknown:
        known = sorted(schema)
        raise ValueError("; ".join(_unknown(k, known) for k in unknown) + ".")

    if isinstance(config, ConfigParser):
        values = plain_values(config, schema)
    else:
        values = {k: v for k, v in config.items() if not schema[k].structural}

    switches = {k: v for k, v in values.items() if schema[k].kind == "bool"}
    check_flags({k: v for k, v in switches.items() if not isinstance(v, bool)})

    bad = [
        f"config key {k!r} must be {schema[k].allowed}, got {_SHOW.repr(v)}"
        for k, v in values.items()
        if schema[k].kind != "bool" and not schema[k].accepts(v)  # type: ignore[misc]
    ]
    if bad:
        raise ValueError("; ".join(bad) + ".")

    problems = []
    for relation in relations:
        if all(k in values for k in relation.keys):
            problem = relation.check({k: values[k] for k in relation.keys})
            if problem:
                problems.append(f"config keys {', '.join(relation.keys)}: {problem}")
    if problems:
        raise ValueError("; ".join(problems) + ".")
