"""Every trained run is a bundle: ``<bundle_root>/export/<name>/``, self-contained, in the model-zoo layout.

The export holds

- ``configs/inference.json``: the library's inference wiring (:data:`INFERENCE_TEMPLATE`, the same file as
  ``bundles/la/configs/inference.json``) with the run's ``network_settings``, ``preprocessing_settings``, class
  names and sliding-window values written in as literals, so ``python -m monai.bundle run inference
  --bundle_root <export> --config_file <export>/configs/inference.json --input <folder> --output_dir <out>``
  needs no other override; the network is built by ``crln_monai.networks.CRLN(**network_settings)`` and the
  preprocessing by ``crln_monai.data.evaluation_transforms``, as in training;
- ``configs/metadata.json`` (the MONAI bundle specification's keys, channels, classes, spacing, patch, results);
- ``models/model.pt``: the teacher's plain state dict, without the training-only projection head;
- ``docs/README.md``: the model card, rendered from ``metadata.json`` and ``inference.json`` (:func:`model_card`;
  again when :func:`record_test_results` adds test results); ``LICENSE``;
- ``large_files.yml``: the weights' path and sha256 for the model zoo, ``url`` left for the publisher.

MONAI's ``init_bundle`` writes a generic skeleton and ``ckpt_export`` a TorchScript file; neither fills a
config with a run's resolved values, hence this module. Writes are atomic: the bundle is built in a temporary
folder of the export folder and renamed into place (:func:`crln_monai.io.staged_folder`), so a reader never sees half
an export.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import monai
import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from ..data.datalist import export_name
from ..data.dataset import read_dataset
from ..io import atomic_write, staged_folder
from ..overrides import cli_value, plain

__all__ = [
    "INFERENCE_TEMPLATE", "BundleExporter", "export_bundle", "export_name", "inference_config", "model_card",
    "record_test_results",
]

logger = logging.getLogger(__name__)

INFERENCE_TEMPLATE = Path(__file__).with_name("inference.json")
"""The inference wiring shared by the shipped bundles (layered on their ``train.json``) and every export."""

_SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
_DEVICE = "$crln_monai.workflow.default_device()"
_IMPORTS = [
    "$import os", "$import crln_monai", "$import crln_monai.workflow", "$import crln_monai.data",
    "$import crln_monai.networks",
]  # fmt: skip
_PACKAGES = ("crln-monai", "nibabel", "pytorch-ignite")  # what the exported inference imports beyond MONAI/torch
_CODE_LICENCE = (
    "The code that runs this bundle (crln-monai, MONAI, PyTorch) is licensed under the Apache License 2.0:\n"
    "https://www.apache.org/licenses/LICENSE-2.0\n"
)


def inference_config(
    settings: Mapping[str, Any], inference: Mapping[str, Any], template: str | os.PathLike = INFERENCE_TEMPLATE
) -> dict[str, Any]:
    """The self-contained ``inference.json`` of an export.

    Args:
        settings: ``{"network": network_settings, "preprocessing": preprocessing_settings, "class_names": [...]}``
            as resolved for the run; the network's projection head (training only) is left out.
        inference: ``patch_size``, ``sw_stride``, ``sw_batch_size`` and ``amp_dtype`` of the run, and its
            ``trained_geometry`` (:func:`~crln_monai.data.trained_geometry`: inputs outside it are resampled).
        template: the inference wiring (top-level ``+imports`` and the inference-specific keys).

    Returns:
        the config: literal values first, then the template's keys, ``ckpt_path`` pointing at ``models/model.pt``.
    """
    wiring = json.loads(Path(template).read_text())
    network = {**plain(settings["network"]), "use_projection": False}
    values: dict[str, Any] = {
        "imports": list(dict.fromkeys(_IMPORTS + list(wiring.pop("+imports", [])))),
        "bundle_root": ".",
        "device": _DEVICE,
        "ckpt_dir": "$@bundle_root + '/models'",
        "in_channels": network.get("in_channels", 1),
        "num_classes": network.get("num_classes", len(settings["class_names"])),
        "class_names": plain(settings["class_names"]),
        **{key: plain(inference[key]) for key in ("patch_size", "sw_stride", "sw_batch_size", "amp_dtype")},
        "network_settings": network,
        "preprocessing_settings": plain(settings["preprocessing"]),
        "settings": {
            "network": "@network_settings", "preprocessing": "@preprocessing_settings", "class_names": "@class_names",
        },  # fmt: skip
    }
    config = {**values, **wiring}
    config["ckpt_path"] = "$@ckpt_dir + '/model.pt'"
    # the run's geometry as a value: the template reads it from a training checkpoint, and models/model.pt is the
    # plain state dict
    config["trained_geometry"] = plain(inference.get("trained_geometry"))
    # a property MONAI's infer workflow requires: the default input folder (``--input`` may name files instead)
    config["dataset_dir"] = "$@bundle_root + '/inputs'"
    return config


def _channel_names(dataset: Mapping[str, Any], in_channels: int) -> dict[str, str]:
    names = dataset.get("channel_names") or dataset.get("modality") or {}
    if not isinstance(names, Mapping):
        names = {}
    return {str(i): str(names.get(str(i), "image" if in_channels == 1 else f"channel {i}")) for i in range(in_channels)}


def _modality(channels: Mapping[str, str]) -> tuple[str, str]:
    """(modality, network_data_format format) from the json's channel names: CT → hounsfield, else magnitude."""
    first = next(iter(channels.values()), "").upper()
    if "CT" in first:
        return "CT", "hounsfield"
    if any(tag in first for tag in ("MR", "T1", "T2", "FLAIR", "ADC", "DWI", "LGE", "CINE")):
        return "MR", "magnitude"
    return first or "unknown", "magnitude"


def _versions() -> dict[str, str]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def _metadata(
    name: str,
    settings: Mapping[str, Any],
    inference: Mapping[str, Any],
    dataset: Mapping[str, Any],
    source: Mapping[str, Any] | None,
    results: Mapping[str, Any],
    run: Mapping[str, Any],
) -> dict[str, Any]:
    source = dict(source or {})
    network, preprocessing = settings["network"], settings["preprocessing"]
    class_names = list(settings["class_names"])
    in_channels = int(network.get("in_channels", 1))
    channels = _channel_names(dataset, in_channels)
    modality, image_format = _modality(channels)
    patch = [int(p) for p in inference["patch_size"]]
    value_range = [0, 1] if preprocessing.get("normalise", "minmax") == "minmax" else []
    version = str(source.get("version", "0.1.0"))
    today = datetime.date.today().isoformat()
    eval_metrics = {
        f"{split}_{metric}": value
        for split, values in results.items()
        for metric, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and metric not in ("epoch", "iteration")
    }
    return {
        "schema": source.get("schema", _SCHEMA_URL),
        "version": version,
        "changelog": {version: f"exported from a crln-monai training run on {today}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": _versions(),
        "name": f"{name} CRLN segmentation",
        "task": f"Semi-supervised 3D segmentation of {', '.join(class_names[1:])} from {modality} ({name})",
        "description": (
            f"CRLN ({network.get('backbone', 'vnet')} backbone) trained with crln-monai on {name}; "
            f"{len(class_names)} classes ({', '.join(class_names)})."
        ),
        "authors": source.get("authors", "crln-monai user"),
        "copyright": source.get("copyright", "Copyright (c) the authors of this training run"),
        "intended_use": source.get("intended_use", "Research only, not for clinical diagnosis"),
        "data_source": str(dataset.get("description") or dataset.get("name") or name),
        "data_type": "nifti",
        "image_classes": f"{in_channels}-channel {modality} ({', '.join(channels.values())}), preprocessed as in "
        "training",
        "label_classes": ", ".join(f"{i} {n}" for i, n in enumerate(class_names)),
        "pred_classes": f"{len(class_names)} channels of class probabilities (the inferer's softmax, averaged over the "
        "sliding windows); the written label map is their argmax: " + ", ".join(f"{i} {n}" for i, n in enumerate(class_names)),
        "eval_metrics": eval_metrics,
        "results": plain(results),
        "references": list(source.get("references", [])),
        "patch_size": patch,
        "sw_stride": [int(s) for s in inference["sw_stride"]],
        "orientation": preprocessing.get("orientation"),
        "spacing": preprocessing.get("target_spacing") or (inference.get("trained_geometry") or {}).get("spacing"),
        "trained_geometry": plain(inference.get("trained_geometry")),
        "normalise": preprocessing.get("normalise"),
        "class_names": class_names,
        "run": plain(run),
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image", "format": image_format, "modality": modality, "num_channels": in_channels,
                    "spatial_shape": patch, "dtype": "float32", "value_range": value_range, "is_patch_data": True,
                    "channel_def": channels,
                }
            },
            "outputs": {
                "pred": {
                    "type": "image", "format": "segmentation", "num_channels": len(class_names), "spatial_shape": patch,
                    "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in enumerate(class_names)},
                }
            },
        },
    }  # fmt: skip


def _table(rows: Mapping[str, Any]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | `{cli_value(v, quote=False)}` |" for k, v in rows.items()]
    return "\n".join(lines)


def _result_line(split: str, values: Mapping[str, Any]) -> str:
    """One line of the card's Results: a split's numbers, or a test evaluation's means ± bootstrap stds."""
    if not any(isinstance(v, Mapping) for v in values.values()):
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        return f"- {split}: {shown}"
    stats = {k: v for k, v in values.items() if isinstance(v, Mapping) and v.get("mean") is not None}
    shown = ", ".join(f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in stats.items())
    return (
        f"- {split}: {shown} ({values.get('num_cases')} cases, {values.get('checkpoint')}; `summary.md` of the "
        "evaluation has every class)"
    )


def model_card(meta: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The export's ``docs/README.md``, rendered whole from its ``configs/metadata.json`` (``meta``: names, classes,
    the run's data set, cases, training values and results) and its ``configs/inference.json`` (``config``: the
    network, preprocessing and sliding-window settings)."""
    run = meta.get("run", {})
    version = meta["required_packages_version"].get("crln-monai", "?")
    weights, classes = run.get("weights", "the teacher of the run"), meta["label_classes"]
    patch, stride = (cli_value(list(config[k]), quote=False) for k in ("patch_size", "sw_stride"))
    network = {k: v for k, v in config["network_settings"].items() if k != "use_projection"}
    data_lines = [
        (
            f"- data set: **{run.get('data_set', meta['name'])}** (`{run.get('datalist_file', 'dataset.json')}`); "
            f"{meta['image_classes']}"
        ),
        f"- classes: {classes}",
    ]
    if run.get("cases"):
        data_lines.append("- cases: " + ", ".join(f"{n} {k}" for k, n in run["cases"].items()))
    if meta.get("results"):
        result_text = "\n".join(_result_line(split, values) for split, values in meta["results"].items())
    else:
        result_text = "No validation split was used and no test evaluation was run: no results recorded."
    training_text = _table(run["training"]) if run.get("training") else "(not recorded)"
    return f"""# {meta['name']}

{meta['changelog'][meta['version']].capitalize()} (crln-monai {version}):
{weights}. Everything needed to segment new images is in this folder: the network and preprocessing
settings of the run are written into `configs/inference.json`.

**Intended use:** {meta['intended_use']}.

## Data

{chr(10).join(data_lines)}

## Settings of the run (the plan)

Network (`crln_monai.networks.CRLN`):

{_table(network)}

Preprocessing (`crln_monai.data.evaluation_transforms`, the same as in training):

{_table(config['preprocessing_settings'])}

Sliding window: patch `{patch}`, stride `{stride}`, {config['sw_batch_size']} windows per batch, softmax averaged.

Training:

{training_text}

## Results

{result_text}

## Use

```bash
pip install -e <crln-monai checkout>   # the library that builds the network and the preprocessing
python -m monai.bundle run inference --bundle_root <this folder> \\
    --config_file <this folder>/configs/inference.json --input <NIfTI folder or file> --output_dir <out>
```

Each input `<case>.nii.gz` gives `<out>/<case>_seg.nii.gz`: a uint8 label map ({classes}) with the input's
shape and affine. Options: `--device "\\$torch.device('cpu')"`, `--sw_batch_size 8`,
`--amp_dtype bfloat16` (GPU). `models/model.pt` is a plain state dict of `CRLN(**network_settings)`; MONAI's
`ckpt_export network_def` and `verify_net_in_out network_def` work on this config.

## Files

`configs/inference.json`, `configs/metadata.json`, `models/model.pt`, `docs/README.md`, `LICENSE`,
`large_files.yml` (the weights' sha256; fill in its `url` where you publish them).
"""


def _write_model_card(bundle: Path) -> None:
    """Render the export ``bundle``'s ``docs/README.md`` from its metadata and inference config (:func:`model_card`)."""
    meta, config = (json.loads((bundle / "configs" / f).read_text()) for f in ("metadata.json", "inference.json"))
    atomic_write(bundle / "docs" / "README.md", model_card(meta, config))


def _write_large_files(bundle: Path, weights: str) -> None:
    """``large_files.yml``: the model zoo's list of files kept out of a bundle's repository, with their hash.

    ``url`` is left empty for whoever publishes the weights to fill in; until then MONAI's
    ``download_large_files`` checks the local file against the hash and downloads nothing.
    """
    digest = hashlib.sha256((bundle / weights).read_bytes()).hexdigest()
    (bundle / "large_files.yml").write_text(
        "# Files kept out of a bundle's repository. Fill in url where the weights are published.\n"
        f'large_files:\n  - path: "{weights}"\n    url: ""\n    hash_val: "{digest}"\n    hash_type: "sha256"\n'
    )


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, text)  # replaced whole, never half-written


def export_bundle(
    export_dir: str | os.PathLike,
    name: str,
    state_dict: Mapping[str, torch.Tensor],
    settings: Mapping[str, Any],
    inference: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
    datalist_file: str = "dataset.json",
    counts: Mapping[str, int] | None = None,
    training: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    license_text: str | None = None,
    model_description: str = "the teacher of the run",
) -> Path:
    """Write ``<export_dir>/<name>/`` atomically and return it.

    Args:
        export_dir: the folder of exports (``<bundle_root>/export``).
        name: the export's folder name (:func:`export_name`).
        state_dict: the teacher's state dict; ``projection.*`` entries (CPS's training-only head) are dropped.
        settings: ``{"network", "preprocessing", "class_names"}`` of the run (the bundle key ``settings``).
        inference: ``patch_size``, ``sw_stride``, ``sw_batch_size``, ``amp_dtype``.
        dataset: the data set json (name, description, modality / channel_names), for metadata and card.
        datalist_file: its file name, for the card.
        counts: cases per split (``{"labelled": 8, ...}``), for the card.
        training: run values shown in the card (epochs, iterations, learning rate, ...).
        results: ``{"validation": {"mean_dice": 0.9, "epoch": 5}, "test": {...}}``.
        metadata: the source bundle's ``metadata.json`` (authors, copyright, references, task are kept).
        license_text: the ``LICENSE`` text; ``None`` writes the code licence and the data terms note.
        model_description: which weights these are, for the card ("the best teacher on the validation split ...").
    """
    dataset = dict(dataset or {})
    run = {
        "data_set": dataset.get("name", name), "datalist_file": datalist_file, "cases": dict(counts or {}),
        "training": dict(training or {}), "weights": model_description,
    }  # fmt: skip
    with staged_folder(export_dir, name) as stage:  # the whole folder replaced at once
        bundle = stage / name
        for sub in ("configs", "models", "docs"):
            (bundle / sub).mkdir(parents=True)
        model = {k: v.detach().cpu() for k, v in state_dict.items() if not k.startswith("projection.")}
        torch.save(model, bundle / "models" / "model.pt")
        _write_large_files(bundle, "models/model.pt")
        _write_json(bundle / "configs" / "inference.json", inference_config(settings, inference))
        meta = _metadata(name, settings, inference, dataset, metadata, dict(results or {}), run)
        _write_json(bundle / "configs" / "metadata.json", meta)
        _write_model_card(bundle)
        if license_text is None:
            terms = dataset.get("licence") or dataset.get("license")
            license_text = _CODE_LICENCE + (
                f"\nModel weights: trained on {dataset.get('name', name)}, whose terms are: {terms}\n"
                if terms
                else "\nModel weights inherit the terms of the data they were trained on.\n"
            )
        (bundle / "LICENSE").write_text(license_text)
    target = Path(export_dir) / name
    logger.info(f"exported the trained model as a bundle: {target}")
    return target


class BundleExporter:
    """Ignite handler: export the run as a bundle when training ends and whenever a new best model is kept.

    With a ``validator`` the export holds the best model (the one ``best_checkpoint`` holds, re-read when training
    ends so a resumed run exports its best too) and its validation score; without one, the final teacher.

    Args:
        export_dir: the folder of exports (``<bundle_root>/export``); the bundle goes to ``export_dir/<name>``.
        network: the teacher.
        settings: the bundle's ``settings`` (``{"network", "preprocessing", "class_names"}``).
        inference: ``patch_size``, ``sw_stride``, ``sw_batch_size``, ``amp_dtype``.
        dataset_dir: the data set folder (its json, read by :func:`~crln_monai.data.dataset.read_dataset`, gives
            the name, modality and description).
        datalist_file: the data set json's file name in ``dataset_dir``.
        datalist: the run's datalist (``{"labelled": [...], ...}``); only the counts are used.
        training: run values for the model card, over those the trainer states (its ``run_values()``, e.g.
            :meth:`~crln_monai.engines.SemiSupervisedTrainer.run_values`) and the number of labelled cases.
        metadata: the source bundle's metadata (``@_meta_``).
        license_file: the bundle's ``LICENSE``, copied when it exists.
        validator: the validation evaluator, or ``None`` when the run has no validation split.
        best_checkpoint: the best checkpoint's path (``models/model.pt``).
        name: the export's folder name; default :func:`export_name`.
        save_rank: under ``torch.distributed``, the only rank that writes.
        run_record: the run's :class:`~crln_monai.handlers.RunRecord`: the card then claims the iterations
            trained on this data set, and those on earlier data sets apart (a run resumed with
            ``--resume_other_data True``); without it, every iteration of the trainer.
    """

    def __init__(
        self,
        export_dir: str | os.PathLike,
        network: nn.Module,
        settings: Mapping[str, Any],
        inference: Mapping[str, Any],
        dataset_dir: str | os.PathLike,
        datalist_file: str = "dataset.json",
        datalist: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        license_file: str | os.PathLike | None = None,
        validator: Engine | None = None,
        best_checkpoint: str | os.PathLike | None = None,
        name: str | None = None,
        save_rank: int = 0,
        run_record: Any = None,
    ) -> None:
        self.export_dir = Path(export_dir)
        self.network = network
        self.settings = plain(settings)
        self.inference = plain(inference)
        self.datalist_file = datalist_file
        self.name = name or export_name(dataset_dir, datalist_file)
        try:
            dataset = read_dataset(dataset_dir, datalist_file, cases=False).raw
        except (OSError, ValueError):  # a missing or unreadable json: the card says less
            dataset = {}
        self.dataset = {k: v for k, v in dataset.items() if isinstance(v, (str, Mapping))}  # name, labels, modality
        self.counts = {k: len(v) for k, v in (datalist or {}).items() if isinstance(v, (list, tuple))}
        self.training = plain(dict(training or {}))
        self.metadata = copy.deepcopy(dict(metadata)) if metadata else None
        self.license_file = Path(license_file) if license_file else None
        self.validator = validator
        self.best_checkpoint = Path(best_checkpoint) if best_checkpoint else None
        self.save_rank = save_rank
        self.run_record = run_record
        self.trainer: Engine | None = None
        self.path = self.export_dir / self.name

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer (``COMPLETED``) and, with a validator, to its ``EPOCH_COMPLETED``."""
        self.trainer = engine
        engine.add_event_handler(Events.COMPLETED, self.on_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self.on_validation)

    def _is_writer(self) -> bool:
        return idist.get_rank() == self.save_rank

    def _best_results(self) -> dict[str, Any]:
        state = getattr(self.validator, "state", None)
        if state is None or getattr(state, "best_metric_epoch", -1) in (-1, None):
            return {}
        metric = getattr(state, "key_metric_name", None) or "key_metric"
        return {"validation": {metric: float(state.best_metric), "epoch": int(state.best_metric_epoch)}}

    def _training_values(self) -> dict[str, Any]:
        values = {"num_labelled": self.counts["labelled"]} if "labelled" in self.counts else {}
        if callable(getattr(self.trainer, "run_values", None)):
            values.update(plain(self.trainer.run_values()))
        values.update(self.training)
        if self.trainer is not None:
            iteration = int(self.trainer.state.iteration)
            if self.run_record is not None:
                values.update(self.run_record.iterations(iteration))
            else:
                values["iterations_trained"] = iteration
        return values

    @staticmethod
    def _best_description(results: Mapping[str, Any]) -> str:
        (metric, value), epoch = next(iter(results["validation"].items())), results["validation"]["epoch"]
        return f"the best teacher on the validation split ({metric} {value:.4f} at epoch {epoch})"

    def on_validation(self, validator: Engine) -> None:
        """Export the teacher when this validation kept a new best (as the best checkpoint saver does)."""
        if getattr(validator.state, "best_metric_epoch", -1) == validator.state.epoch:
            results = self._best_results()
            self.export(self.network.state_dict(), results, self._best_description(results))

    def on_completed(self, engine: Engine) -> None:
        """Export the best model if validation kept one, else the final teacher."""
        if not self._is_writer():
            return
        results = self._best_results()
        if results and self.best_checkpoint is not None and self.best_checkpoint.is_file():
            from ..handlers.checked_loader import read_checkpoint

            best = read_checkpoint(self.best_checkpoint, map_location="cpu")
            self.export(best.get("model", best), results, self._best_description(results))
        else:
            final = f"the final teacher after {engine.state.iteration} iterations"
            counted = self._training_values()
            if "iterations_on_earlier_data" in counted:
                final += f", {counted['iterations_trained']} of them on this data set"
            self.export(self.network.state_dict(), results, final)

    def export(
        self, state_dict: Mapping[str, torch.Tensor], results: Mapping[str, Any] | None = None, description: str = ""
    ) -> Path | None:
        """Write the bundle; returns its folder, or ``None`` on a rank other than ``save_rank``."""
        if not self._is_writer():
            return None
        license_text = None
        if self.license_file is not None and self.license_file.is_file():
            license_text = self.license_file.read_text()
        return export_bundle(
            self.export_dir, self.name, state_dict, self.settings, self.inference, dataset=self.dataset,
            datalist_file=self.datalist_file, counts=self.counts, training=self._training_values(),
            results=results, metadata=self.metadata, license_text=license_text,
            model_description=description or "the teacher of the run",
        )  # fmt: skip


_TEST_METRICS = ("dice", "jaccard", "hd95_mm", "asd_mm")
"""The metrics of ``summary.json`` (means over the foreground classes) recorded as an export's test results."""


def record_test_results(
    export_path: str | os.PathLike, checkpoint: str | os.PathLike, report_dir: str | os.PathLike
) -> bool:
    """Add an evaluation's test results to an export, when the evaluated checkpoint holds the exported weights.

    Writes ``results.test`` (mean ± bootstrap std of Dice, Jaccard, HD95 and ASD in mm over the test cases, the
    case count, the empty predictions and the checkpoint's file name) and the ``test_*`` ``eval_metrics`` into
    ``configs/metadata.json`` (first among the results, so the card lists it first), then renders ``docs/README.md``
    again from it (:func:`model_card`: a "test" line in its Results section). An export of other weights (e.g. the
    best teacher on validation while ``model_last.pt`` was evaluated) is left untouched, so an export never shows
    numbers of a model it does not hold.

    Args:
        export_path: the export folder (``<export_dir>/<name>``).
        checkpoint: the evaluated training checkpoint.
        report_dir: the evaluation's output folder (its ``summary.json``).

    Returns:
        whether the results were recorded.
    """
    from ..handlers.checked_loader import read_checkpoint

    export_path, summary_file = Path(export_path), Path(report_dir) / "summary.json"
    model_file = export_path / "models" / "model.pt"
    if not model_file.is_file() or not summary_file.is_file():
        logger.info(f"no export at {export_path} or no report {summary_file}: no test results recorded")
        return False
    exported = torch.load(model_file, map_location="cpu", weights_only=True)
    evaluated = read_checkpoint(checkpoint, map_location="cpu")
    evaluated = evaluated.get("model", evaluated)
    if not all(k in evaluated and torch.equal(v, evaluated[k]) for k, v in exported.items()):
        logger.warning(f"the export {export_path} holds other weights than {checkpoint}: its results are unchanged")
        return False
    summary = json.loads(summary_file.read_text())
    metrics = summary.get("metrics", {})
    test: dict[str, Any] = {
        key: {"mean": metrics[key]["mean"], "std": metrics[key]["std"]} for key in _TEST_METRICS if key in metrics
    }
    test.update(
        num_cases=summary.get("num_cases"), num_empty_predictions=summary.get("num_empty_predictions"),
        checkpoint=Path(checkpoint).name,
    )  # fmt: skip
    meta_file = export_path / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["results"] = {"test": test, **{k: v for k, v in meta.get("results", {}).items() if k != "test"}}
    meta.setdefault("eval_metrics", {}).update(
        {f"test_mean_{k}": v["mean"] for k, v in test.items() if isinstance(v, dict) and v["mean"] is not None}
    )
    _write_json(meta_file, meta)
    _write_model_card(export_path)
    logger.info(f"recorded the test results of {checkpoint} in the export {export_path}")
    return True
