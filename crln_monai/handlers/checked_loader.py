"""Checkpoint loading that refuses a wrong file with one line saying what is wrong, before anything is loaded.

MONAI's ``CheckpointLoader`` hands torch's and ignite's errors through: random bytes give torch's
"weights_only=False will likely succeed" (the wrong advice for a file that is no checkpoint), a text file a
``KeyError``, a checkpoint of another configuration some sixty raw ``Missing key(s)`` lines. This loader reads the
file itself, then checks, in order:

1. the file is a PyTorch checkpoint of tensors and plain values (``torch.load(weights_only=True)``);
2. the settings it was trained with (``checkpoint["settings"]``, written by the training bundles) equal the
   config's: the differing ones are named with both values and the overrides to type;
3. every network's state dict fits: missing and unexpected key counts with the first few names, shape
   mismatches named (checkpoints without settings, e.g. older ones, load when they fit).

Then it loads like MONAI's ``CheckpointLoader`` (which it subclasses: same arguments, attachment and handling of
a plain state dict for a single object).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader
from torch import nn

from ..overrides import describe_differences, settings_differences

__all__ = [
    "CheckedCheckpointLoader",
    "CheckpointError",
    "check_checkpoint",
    "checkpoint_geometry",
    "read_checkpoint",
    "state_dict_mismatch",
]

_SHOWN = 4  # key names shown per kind of mismatch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


def read_checkpoint(path: str | os.PathLike, map_location: Any = None) -> Mapping[str, Any]:
    """``torch.load(path, weights_only=True)``, with one-line errors naming the file.

    Raises:
        FileNotFoundError: ``path`` does not exist or is a folder.
        CheckpointError: (a ``ValueError``) an empty file, a file that is not a PyTorch checkpoint, a truncated or
            corrupted one, one holding objects other than tensors and plain values, or one that holds no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not a PyTorch checkpoint.")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted: a zip archive ({size} bytes) without its end, as an "
            "interrupted write or copy leaves; not a readable PyTorch checkpoint."
        )
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # torch.save's zip format, or its legacy pickle one
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint ({size} bytes that are neither torch.save's zip "
            "format nor its legacy pickle format); give the model.pt or model_last.pt a training run wrote."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text:
            raise CheckpointError(
                f"checkpoint {path} holds Python objects other than tensors and plain values, which are not "
                "loaded (unpickling them could run code): save the network's state_dict() instead."
            ) from None
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text.strip() else "unreadable"
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (its data is not what torch.save writes: {reason[:80]})."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted, not a readable PyTorch checkpoint "
            f"({type(e).__name__}: {reason[:120]})."
        ) from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, expected a state dict or "
            "{'model': state_dict, 'settings': {...}}."
        )
    return checkpoint


def checkpoint_geometry(path: str | os.PathLike) -> dict[str, Any] | None:
    """The training geometry a checkpoint records (``checkpoint["geometry"]``, see
    :func:`~crln_monai.data.trained_geometry`), for inference through the training configs; ``None`` when the file
    is missing (the checkpoint loader then says so) or predates the record (inputs are then not resampled)."""
    if not Path(path).is_file():
        return None
    geometry = read_checkpoint(path, map_location="cpu").get("geometry")
    return dict(geometry) if isinstance(geometry, Mapping) else None


def resume_source(resume: bool | str | None, default: str | os.PathLike) -> str | None:
    """The checkpoint a run resumes from, or ``None`` for a fresh start (the bundle key ``resume``).

    ``None``/``False``: a fresh start. ``True``: ``default`` (``<ckpt_dir>/resume.pt``; refused later when missing).
    ``"auto"``: ``default`` when it exists, else a fresh start, so the same command starts a run and continues it
    after an interruption (a job with a time limit, run again until done). A path: that checkpoint.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        return str(default)
    if resume == "auto":
        return str(default) if os.path.isfile(default) else None
    return str(resume)


def check_checkpoint(
    path: str | os.PathLike | None, settings: Mapping[str, Any] | None, objects: Sequence[str]
) -> None:
    """Refuse a checkpoint before any work: unreadable, trained with other ``settings``, or without the ``objects``
    a run will load from it — :meth:`CheckedCheckpointLoader.check` without the objects themselves.

    Meant for a run list ahead of the data loading, e.g. ``--resume True`` with a missing, broken or foreign
    ``resume.pt`` is then refused before the cache fills instead of when the trainer starts (building the objects
    would build the data set); the loader repeats the checks when it loads. Returns nothing, so the run list keeps
    no copy of the weights. ``path=None`` (a fresh run) checks nothing.

    Raises:
        FileNotFoundError, CheckpointError: as :meth:`CheckedCheckpointLoader.check`.
    """
    if path is not None:
        CheckedCheckpointLoader(path, dict.fromkeys(objects), settings, map_location="cpu").check()


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", ..." if len(keys) > _SHOWN else "")


def _expected_state(module: nn.Module, state: Mapping[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The module's state dict and the part of ``state`` its ``load_state_dict`` will look at."""
    from ..networks import RectifiedPrediction  # the inference wrapper drops a training-only projection head

    if isinstance(module, RectifiedPrediction) and module.network.projection is None:
        state = {k: v for k, v in state.items() if not str(k).startswith("projection.")}
    return module.state_dict(), state


def state_dict_mismatch(module: nn.Module, state: Mapping[str, Any]) -> str | None:
    """How ``state`` fails to fit ``module`` (missing / unexpected key counts, first names, shape mismatches).

    Returns:
        ``None`` when ``module.load_state_dict(state, strict=True)`` would succeed key- and shape-wise, else a
        short description such as ``"60 missing keys (dim.prototypes, ...); shape mismatch backbone.head.weight:
        checkpoint [4, 16, 1, 1, 1], network [2, 16, 1, 1, 1]"``.
    """
    expected, state = _expected_state(module, state)
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {list(state[k].shape)}, network {list(v.shape)}"
        for k, v in expected.items()
        if isinstance(state.get(k), torch.Tensor) and isinstance(v, torch.Tensor) and state[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' * (len(missing) > 1)} ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} ({_names(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch{'es' * (len(shapes) > 1)} ({'; '.join(shapes[:_SHOWN])}"
                     + ("; ..." if len(shapes) > _SHOWN else "") + ")")  # fmt: skip
    return "; ".join(parts) or None


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` with the checks of this module's docstring, each failing in one line.

    Args:
        load_path: the checkpoint file.
        load_dict: name → object to load (``{"model": network}``); with one object, a checkpoint that is a plain
            state dict is loaded into it, as MONAI does.
        settings: the config's ``settings`` (``{"network": ..., "preprocessing": ..., "class_names": ...}``),
            compared with the checkpoint's when both have them; ``None`` skips that check.
        name, map_location, strict: as MONAI's ``CheckpointLoader`` (``strict_shape`` is always ``True``: a
            checkpoint that does not fit is refused, never partly loaded).

    Raises (when the engine starts, before anything is loaded):
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a usable checkpoint, its settings differ from ``settings`` (each differing
            setting named with both values and the override, e.g. ``add --use_dim False``), or a state dict does
            not fit its object.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: dict[str, Any],
        settings: Mapping[str, Any] | None = None,
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        super().__init__(str(load_path), load_dict, name=name, map_location=map_location, strict=strict)
        self.settings = settings

    def check(self) -> dict[str, Any]:
        """Read the checkpoint and run every check; returns the checkpoint as ``{name: state, ...}`` for loading."""
        source = f"checkpoint {self.load_path}"
        checkpoint = dict(read_checkpoint(self.load_path, self.map_location))
        stored = checkpoint.get("settings")
        if self.settings is not None and isinstance(stored, Mapping):
            differences = settings_differences(stored, self.settings)
            if differences:
                raise CheckpointError(describe_differences(source, differences))
        first = next(iter(self.load_dict))
        if len(self.load_dict) == 1 and first not in checkpoint:
            objects = [k for k, v in checkpoint.items() if isinstance(v, Mapping) and k != "settings"]
            if objects and len(objects) == len([k for k in checkpoint if k != "settings"]):
                raise CheckpointError(
                    f"{source} holds the objects {objects} but no {first!r}: give a checkpoint of the network "
                    "(model.pt or model_last.pt), not a resume file."
                )
            checkpoint = {first: checkpoint}
        missing = [k for k in self.load_dict if k not in checkpoint]
        if missing and self.strict:
            raise CheckpointError(f"{source} has no {missing} (it holds {sorted(map(str, checkpoint))}).")
        for key, obj in self.load_dict.items():
            if isinstance(obj, nn.Module) and key in checkpoint and self.strict:
                state = checkpoint[key]
                if not isinstance(state, Mapping):
                    raise CheckpointError(f"{source}: entry {key!r} is a {type(state).__name__}, not a state dict.")
                mismatch = state_dict_mismatch(obj, state)
                if mismatch:
                    origin = (
                        "its settings match, so the file was changed after training"
                        if isinstance(stored, Mapping)
                        else "it holds no settings: probably another bundle's or configuration's checkpoint"
                    )
                    raise CheckpointError(f"{source} does not fit the network {key!r}: {mismatch} ({origin}).")
        return checkpoint

    def __call__(self, engine: Engine) -> None:
        checkpoint = self.check()
        prior_max_epochs = engine.state.max_epochs  # as MONAI: keep the engine's max_epochs over the checkpoint's
        Checkpoint.load_objects(to_load=self.load_dict, checkpoint=checkpoint, strict=self.strict)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"checkpoint {self.load_path} is at epoch {engine.state.epoch}, beyond max_epochs={prior_max_epochs}: "
                f"resume with --max_epochs {engine.state.epoch} or more."
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(f"Restored all variables from {self.load_path}")
