"""Accuracy protocols on the real LA data: the paper's ablation ladder, trained by the LA bundle, scored on test cases.

Methods (bundle overrides; same seed, data, sampler and iteration budget for all):

* ``supervised``       ``use_unlabelled=False, use_dim=False, use_cps=False``
* ``mean_teacher``     ``use_dim=False, use_cps=False, cutmix=False, noise=False``
* ``mt_cutmix_noise``  ``use_dim=False, use_cps=False``
* ``crln_dim``         ``use_cps=False``
* ``crln_full``        bundle defaults

Protocols:

* ``cpu`` — trains at REDUCED resolution and scores at the ORIGINAL one. A copy of the needed LA cases,
  downsampled by ``--factor`` (default 2 → 1.25 mm) on every axis (image: area average; label: area average
  >= 0.5), is written to ``<work_dir>/data_f<factor>`` with a Decathlon ``dataset.json`` (``train_ids`` = the first
  8 ``train_ids`` as labelled, then the unlabelled pool — all 72 by default, ``--num_unlabelled`` to cut it —
  and ``test_ids``). Each method is trained by ``python -m monai.bundle run training`` in a subprocess (patch
  64x64x32, ``sw_stride`` scaled, validation off). The teacher's ``models/model_last.pt`` is then loaded into
  ``RectifiedPrediction(CRLN(...))`` built from the same config, run by sliding window on each reduced test volume,
  its softmax upsampled (trilinear) to the original grid, and scored against the ORIGINAL label
  (:func:`crln_monai.evaluation.case_record`: voxels of the original grid and mm).
* ``gpu`` — full resolution. A subset of the LA files of at most ``--max_subset_mib`` (55) MiB — the 8 labelled
  cases, the next unlabelled cases that fit (up to ``--num_unlabelled``, default 9) and the test cases — is
  copied to ``<work_dir>/data_subset`` (its size is printed); ``--prepare_only`` stops there, so the folder can
  be carried to a GPU machine and passed back as ``--data_dir``. The iteration count comes from
  ``--train_seconds`` (240) and a short in-process probe of the real iteration (data loading included).

Writes ``--out`` (JSON) and the same name with ``.md`` (the results table), plus one evaluation report per method
(``per_case.csv``, ``summary.json``, ``summary.md``) under ``<work_dir>/runs/<protocol>_<method>/report``.

Examples::

    python scripts/la_accuracy.py --protocol cpu --work_dir work/la_cpu --out la_cpu.json
    python scripts/la_accuracy.py --protocol gpu --work_dir work/la_gpu --prepare_only --out la_gpu_prepare.json
    python scripts/la_accuracy.py --protocol gpu --data_dir work/la_gpu/data_subset --work_dir work/la_gpu_run --out la_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crln_monai.workflow import ABLATION_LADDER, ablation_overrides
from crln_monai.overrides import run_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import _sync, command_line, machine_info, write_json  # noqa: E402
from benchmark_sliding_window import la_cases, num_windows  # noqa: E402

__all__ = [
    "METHODS",
    "PAPER_LA8",
    "PROTOCOLS",
    "bundle_overrides",
    "copy_subset",
    "evaluate_checkpoint",
    "iteration_schedule",
    "main",
    "parse_args",
    "results_markdown",
    "run_logged",
    "select_cases",
    "write_downsampled",
]

REPO = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO / "bundles" / "la"
TRAIN_CONFIG = BUNDLE_ROOT / "configs" / "train.json"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "la2018"

METHODS: dict[str, dict[str, Any]] = {rung: ablation_overrides(BUNDLE_ROOT, rung) for rung in ABLATION_LADDER}
"""The ablation ladder, read from ``bundles/la/configs/ablation/<rung>.json``."""
#: The paper's Table 5 (LA, 8 labelled, final checkpoint; docs/method.md#paper-results): Dice/Jaccard in %, HD95/ASD
#: in voxels.
PAPER_LA8: dict[str, dict[str, float] | None] = {
    "supervised": None,  # not in Table 5
    "mean_teacher": {"dice": 84.19, "jaccard": 72.97, "hd95": 13.12, "asd": 3.95},
    "mt_cutmix_noise": {"dice": 88.67, "jaccard": 79.90, "hd95": 10.97, "asd": 2.98},
    "crln_dim": {"dice": 89.87, "jaccard": 81.73, "hd95": 6.64, "asd": 2.12},
    "crln_full": {"dice": 91.74, "jaccard": 84.79, "hd95": 4.60, "asd": 1.46},
}
PROTOCOLS: dict[str, dict[str, Any]] = {
    "cpu": {
        "factor": 2, "patch_size": (64, 64, 32),
        "num_unlabelled": 72, "num_workers": 0, "sw_batch_size": 4, "methods": list(METHODS),
        "iterations": 300, "probe_warmup": 1, "probe_iterations": 3,
    },
    "gpu": {
        "factor": 1, "patch_size": (112, 112, 80),
        "num_unlabelled": 9, "num_workers": 8, "sw_batch_size": 16, "methods": ["crln_full"],
        "iterations": None, "probe_warmup": 5, "probe_iterations": 10,
    },
}  # fmt: skip
NUM_LABELLED = 8
PLAN_KEYS = (
    "orientation", "target_spacing", "normalise", "intensity_range", "intensity_stats", "strides", "patch_size",
    "sw_stride", "foreground_share", "labelled_batch_size", "unlabelled_batch_size",
)  # fmt: skip
"""What ``--plan`` takes from the dataset plan: its data-driven choices, not the schedule (the protocol's)."""
MIB = 2**20


# ----------------------------------------------------------------------------------------------- the data


def select_cases(data_dir: Path, num_unlabelled: int, max_test_cases: int | None) -> dict[str, list[dict[str, str]]]:
    """LA-8 protocol: labelled = the first 8 ``train_ids``, unlabelled = the next ``num_unlabelled``, test =
    ``test_ids`` (the first ``max_test_cases`` when given). Items are ``{"case", "image", "label"}``, absolute paths."""
    train = la_cases(data_dir, "train_ids")
    test = la_cases(data_dir, "test_ids")
    if len(train) < NUM_LABELLED + 1:
        raise ValueError(
            f"{data_dir}: train_ids has {len(train)} cases; the LA-8 protocol needs at least {NUM_LABELLED + 1}."
        )
    return {
        "labelled": train[:NUM_LABELLED],
        "unlabelled": train[NUM_LABELLED : NUM_LABELLED + num_unlabelled],
        "test": test[:max_test_cases] if max_test_cases else test,
    }


def _dataset_json(out_dir: Path, split: dict[str, list[dict[str, str]]], note: str) -> None:
    cases = split["labelled"] + split["unlabelled"] + split["test"]
    meta = {
        "name": "LA2018 (la_accuracy copy)",
        "description": note,
        "labels": {"0": "background", "1": "left_atrium"},
        "modality": {"0": "MRI"},
        "numTraining": len(cases),
        "training": [
            {"image": f"./imagesTr/{c['case']}.nii.gz", "label": f"./labelsTr/{c['case']}.nii.gz"} for c in cases
        ],
        "train_ids": [c["case"] for c in split["labelled"] + split["unlabelled"]],
        "test_ids": [c["case"] for c in split["test"]],
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2))


def _downsample_case(image_path: str, label_path: str, factor: int) -> tuple[Any, Any]:
    """Area-averaged image (float32) and label (area average >= 0.5, uint8) at ``1/factor`` of the size, with
    the affine of the coarser grid (voxel ``i`` covers original voxels ``[i*f, (i+1)*f)``)."""
    import nibabel as nib

    image_nii, label_nii = nib.load(image_path), nib.load(label_path)
    shape = image_nii.shape[:3]
    size = tuple(max(1, round(s / factor)) for s in shape)
    image = torch.from_numpy(np.asarray(image_nii.get_fdata(dtype=np.float32)))[None, None]
    label = torch.from_numpy(np.asarray(label_nii.dataobj, dtype=np.float32))[None, None]
    image_small = F.interpolate(image, size=size, mode="area")[0, 0].numpy()
    label_small = (F.interpolate(label, size=size, mode="area")[0, 0] >= 0.5).to(torch.uint8).numpy()
    scale = np.array([s / t for s, t in zip(shape, size)])
    affine = image_nii.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ ((scale - 1) / 2) + affine[:3, 3]  # centre of the first coarse voxel
    affine[:3, :3] = affine[:3, :3] * scale
    return nib.Nifti1Image(image_small, affine), nib.Nifti1Image(label_small, affine)


def write_downsampled(split: dict[str, list[dict[str, str]]], out_dir: Path, factor: int) -> Path:
    """Write the downsampled copy of every case of ``split`` into ``out_dir`` (cases already there are kept).

    Layout: ``imagesTr/<id>.nii.gz`` (float32), ``labelsTr/<id>.nii.gz`` (uint8) and a Decathlon ``dataset.json``
    with ``training``, ``train_ids`` (labelled then unlabelled) and ``test_ids``.
    """
    import nibabel as nib

    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}.")
    (out_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    for item in split["labelled"] + split["unlabelled"] + split["test"]:
        image_out = out_dir / "imagesTr" / f"{item['case']}.nii.gz"
        label_out = out_dir / "labelsTr" / f"{item['case']}.nii.gz"
        if image_out.is_file() and label_out.is_file():
            continue
        if item["label"] is None:
            raise ValueError(f"case {item['case']} has no label file; the LA protocols need labels for every case.")
        image, label = _downsample_case(item["image"], item["label"], factor)
        nib.save(label, label_out)
        nib.save(image, image_out)  # written last: its presence marks a finished case
    note = f"LA2018 cases downsampled by {factor} on every axis (area average) by scripts/la_accuracy.py"
    _dataset_json(out_dir, split, note)
    return out_dir


def _case_mib(item: dict[str, str]) -> float:
    return sum(os.path.getsize(p) for p in (item["image"], item["label"]) if p) / MIB


def copy_subset(
    split: dict[str, list[dict[str, str]]], out_dir: Path, max_mib: float
) -> tuple[Path, dict[str, list[dict[str, str]]], float]:
    """Copy the labelled and test cases and as many unlabelled cases (in order) as fit in ``max_mib`` MiB.

    Returns:
        ``(out_dir, the split actually copied, its size on disk in MiB)``.

    Raises:
        ValueError: the labelled and test cases alone exceed ``max_mib``.
    """
    size = sum(_case_mib(c) for c in split["labelled"] + split["test"])
    if size > max_mib:
        raise ValueError(
            f"the {len(split['labelled'])} labelled and {len(split['test'])} test cases take {size:.1f} MiB, "
            f"over --max_subset_mib {max_mib}."
        )
    unlabelled = []
    for item in split["unlabelled"]:
        if size + _case_mib(item) > max_mib:
            break
        unlabelled.append(item)
        size += _case_mib(item)
    kept = {**split, "unlabelled": unlabelled}
    (out_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    for item in kept["labelled"] + kept["unlabelled"] + kept["test"]:
        for key, folder in (("image", "imagesTr"), ("label", "labelsTr")):
            target = out_dir / folder / f"{item['case']}.nii.gz"
            if Path(item[key]).resolve() != target.resolve():
                shutil.copyfile(item[key], target)
    _dataset_json(out_dir, kept, f"LA2018 subset ({size:.1f} MiB) copied by scripts/la_accuracy.py")
    return out_dir, kept, size


# ------------------------------------------------------------------------------------------- the bundle


def iteration_schedule(iterations: int, max_epochs: int = 20) -> tuple[int, int]:
    """``(max_epochs, epoch_length)`` with ``max_epochs = min(iterations, 20)`` (the poly LR steps per epoch) and
    ``epoch_length = iterations // max_epochs``: the run has ``max_epochs * epoch_length <= iterations`` iterations
    (fewer by less than 20, so a time budget is never exceeded)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    epochs = min(iterations, max_epochs)
    return epochs, iterations // epochs


def bundle_overrides(
    method: str, settings: dict[str, Any], data_dir: Path, run_dir: Path, epochs: int, epoch_length: int
) -> dict[str, Any]:
    """Overrides of ``bundles/la/configs/train.json`` for one method (Python values; the command line writes them
    with ``crln_monai.overrides.cli_value``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}.")
    iterations = epochs * epoch_length
    overrides: dict[str, Any] = {
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(data_dir),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"),
        "seed": settings["seed"],
        "patch_size": list(settings["patch_size"]),
        "sw_stride": list(settings["train_stride"]),
        "num_workers": settings["num_workers"],
        "num_labelled": NUM_LABELLED,
        "num_validation": 0,
        "max_epochs": epochs,
        "epoch_length": epoch_length,
        "rectify_start": int(round(settings["rectify_fraction"] * iterations)),
        "lr": settings["lr"],
    }
    if settings["device"] == "cpu":
        overrides["device"] = "$torch.device('cpu')"
    if settings["amp_dtype"]:
        overrides["amp_dtype"] = settings["amp_dtype"]
    if settings["compile"]:
        overrides["compile"] = True
    overrides.update(METHODS[method])  # with use_dim False, train.json builds no rectifier optimiser either
    return overrides


def training_command(overrides: dict[str, Any]) -> list[str]:
    """``python -m monai.bundle run training --config_file <train.json> --<key> <value> ...``."""
    return run_command("training", [TRAIN_CONFIG], overrides)


def run_logged(command: list[str], log_path: Path) -> float:
    """Run ``command`` in a subprocess (cwd: the repository), logging to ``log_path``; returns the wall seconds.

    Raises:
        RuntimeError: the command failed (the log's tail is in the message).
    """
    print("run: " + " ".join(shlex.quote(a) for a in command), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"bundle run failed (exit {code}); log {log_path}:\n{tail}")
    return seconds


def _parser(overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    parser.update(overrides)
    return parser


def build_inference_network(overrides: dict[str, Any], checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """``RectifiedPrediction(CRLN)`` built by the bundle's ``network_def`` under ``overrides``, checkpoint loaded."""
    from crln_monai.networks import RectifiedPrediction

    from crln_monai.handlers import read_checkpoint

    network = RectifiedPrediction(_parser(overrides).get_parsed_content("network_def"))
    state = read_checkpoint(checkpoint, map_location="cpu")  # {"model": teacher, "settings": ...} or a plain state dict
    network.load_state_dict(state.get("model", state))
    return network.to(device).eval()


class _CompletionClock:
    """Ignite handler: host time at each ``ITERATION_COMPLETED`` (device synchronised), so that the intervals
    include the data loading that precedes the next iteration."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        _sync(self.device)
        self.stamps.append(time.perf_counter())


def probe_iteration(overrides: dict[str, Any], warmup: int, timed: int, device: torch.device) -> dict[str, float]:
    """Median seconds per iteration of the bundle's own trainer (real data loading included), run in-process
    for ``warmup + timed`` iterations, and seconds per sliding-window window of its inference network."""
    from monai.bundle import ConfigWorkflow

    probe = {**overrides, "max_epochs": 1, "epoch_length": warmup + timed + 1, "rectify_start": 0}
    workflow = ConfigWorkflow(config_file=str(TRAIN_CONFIG), workflow_type="train", **probe)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train::trainer")
    clock = _CompletionClock(device)
    clock.attach(trainer)
    trainer.run()
    intervals = np.diff(clock.stamps)[warmup:]
    network = workflow.parser.get_parsed_content("inference_network").eval()
    patch = overrides["patch_size"]
    windows = torch.rand(4, 1, *patch, device=device)
    with torch.no_grad():
        network(windows)
        _sync(device)
        start = time.perf_counter()
        network(windows)
        _sync(device)
    per_window = (time.perf_counter() - start) / 4
    del trainer, workflow, network
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"s_per_iteration": float(np.median(intervals)), "s_per_window": per_window}


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_checkpoint(
    network: torch.nn.Module,
    test: list[dict[str, str]],
    original_labels: dict[str, str],
    settings: dict[str, Any],
    device: torch.device,
    preprocessing: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per-case records of ``network`` on the test cases, scored on the ORIGINAL grid.

    Each test image (at the training resolution) goes through the evaluation transforms and
    :class:`~crln_monai.evaluation.UAMTSlidingWindowInferer`; the averaged softmax ``(1, C, h, w, d)`` is
    upsampled trilinearly to the original label's shape when they differ, then argmax-ed and scored with
    :func:`~crln_monai.evaluation.case_record` in voxels of the original grid and in mm (its affine's spacing).
    """
    import nibabel as nib

    from crln_monai.data import evaluation_transforms
    from crln_monai.evaluation import UAMTSlidingWindowInferer, case_record

    load = evaluation_transforms(with_label=False, **(preprocessing or {}))
    inferer = UAMTSlidingWindowInferer(
        settings["patch_size"], settings["eval_stride"], settings["sw_batch_size"], amp_dtype=settings["amp_dtype"]
    )
    records = []
    for item in test:
        image = load({"image": item["image"]})["image"].as_tensor()[None].to(device)
        with torch.no_grad():
            probs = inferer(image, network)
        label_nii = nib.load(original_labels[item["case"]])
        label = np.asarray(label_nii.dataobj) > 0
        if tuple(probs.shape[2:]) != label.shape:
            probs = F.interpolate(probs, size=label.shape, mode="trilinear", align_corners=False)
        pred = (probs.argmax(1)[0] == 1).cpu().numpy()
        spacing = tuple(float(z) for z in label_nii.header.get_zooms()[:3])
        records.append(case_record(item["case"], pred, label, spacing))
        print(f"  {item['case']}: Dice {100 * records[-1]['voxel']['dice']:.2f} %", flush=True)
    return records


def results_markdown(payload: dict[str, Any]) -> str:
    """The results table (Markdown) of a :func:`main` payload."""

    def cell(metrics: dict[str, Any], name: str, scale: float) -> str:
        m = metrics.get(name) or {}
        if m.get("mean") is None:
            return "n/a"
        return f"{m['mean'] * scale:.2f} ± {(m.get('std') or 0.0) * scale:.2f}"

    def paper(method: str) -> str:
        p = PAPER_LA8.get(method)
        return "—" if p is None else f"{p['dice']:.2f} / {p['jaccard']:.2f} / {p['hd95']:.2f} / {p['asd']:.2f}"

    machine = payload["machine"]
    lines = [
        f"# LA accuracy, protocol `{payload['protocol']}`",
        "",
        f"- command: `{payload['command']}`",
        f"- machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, "
        f"device {machine.get('cuda_device') or 'cpu'}",
        f"- data: {payload['data']['description']}",
        "- scored on the original grid (0.625 mm); Dice/Jaccard in %, HD95/ASD in voxels of the original grid and "
        f"in mm; mean ± std over {payload['bootstrap_resamples']} bootstrap resamples of the test cases",
        f"- training: seed {payload['settings']['seed']}, lr {payload['settings']['lr']}, patch "
        f"{payload['settings']['patch_size']}, rectification from {payload['settings']['rectify_fraction']:.0%} "
        f"of the run; evaluation stride {payload['settings']['eval_stride']}",
        "- paper: LA-8 final checkpoint, Table 5 (40k iterations, full resolution), Dice / Jaccard / HD95 / ASD (vox)",
        "",
        "| method | protocol | iterations | Dice (%) | Jaccard (%) | HD95 (vox) | ASD (vox) | HD95 (mm) | ASD (mm) "
        "| empty pred. | train s | paper LA-8 | checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["results"]:
        m = row["summary"]["metrics"]
        lines.append(
            f"| {row['method']} | {row['protocol']} | {row['iterations']} | {cell(m, 'dice', 100)} | "
            f"{cell(m, 'jaccard', 100)} | {cell(m, 'hd95_voxel', 1)} | {cell(m, 'asd_voxel', 1)} | "
            f"{cell(m, 'hd95_mm', 1)} | {cell(m, 'asd_mm', 1)} | {row['summary']['num_empty_predictions']} | "
            f"{row['train_seconds']:.0f} | {paper(row['method'])} | `{row['checkpoint']}` |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        help="default: cpu all five, gpu crln_full")  # fmt: skip
    parser.add_argument("--data_dir", default=None, help="LA folder with dataset.json (default: ../shared/data/la2018)")
    parser.add_argument("--work_dir", default="work/la_accuracy", help="downsampled/copied data and the runs")
    parser.add_argument("--out", default="la_accuracy.json", help="JSON results; the Markdown table goes beside it")
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations per method (default: cpu 300; gpu from --train_seconds)")  # fmt: skip
    parser.add_argument("--train_seconds", type=float, default=240.0, help="gpu: training time per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lr", type=float, default=0.01,
        help="SGD learning rate, same for every method (the paper's 2.5e-3 is tuned for 40k iterations)",
    )  # fmt: skip
    parser.add_argument(
        "--rectify_fraction", type=float, default=0.25,
        help="rectify_start = this fraction of the iterations (paper: 800 of 40k; the authors' 240 s reference run: 200 of 541)",
    )  # fmt: skip
    parser.add_argument("--factor", type=int, default=None, help="cpu: downsampling factor per axis (default 2)")
    parser.add_argument("--patch_size", type=int, nargs=3, default=None, help="default: cpu 64 64 32, gpu 112 112 80")
    parser.add_argument("--eval_stride", type=int, nargs=3, default=None, help="default: 18 18 4 over the factor")
    parser.add_argument("--sw_batch_size", type=int, default=None)
    parser.add_argument("--num_unlabelled", type=int, default=None, help="unlabelled cases (cpu 72, gpu 9)")
    parser.add_argument("--max_test_cases", type=int, default=None, help="score only the first N test cases")
    parser.add_argument("--max_subset_mib", type=float, default=55.0, help="gpu: size cap of the copied subset")
    parser.add_argument("--num_workers", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in training and evaluation")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student and teacher")
    parser.add_argument("--probe_iterations", type=int, default=None,
                        help="timed iterations of the in-process probe (0: no probe; needs --iterations)")  # fmt: skip
    parser.add_argument("--prepare_only", action="store_true", help="write the data copy and stop")
    parser.add_argument("--plan", action="store_true",
                        help="also train crln_full with the choices of python -m crln_monai.plan on the data copy")  # fmt: skip
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    defaults = PROTOCOLS[args.protocol]
    factor = args.factor if args.factor is not None else defaults["factor"]
    if args.protocol == "gpu" and factor != 1:
        raise ValueError("--factor applies to the cpu protocol only; the gpu protocol is full resolution.")
    patch = tuple(args.patch_size or defaults["patch_size"])
    train_stride = tuple(max(1, s // factor) for s in (18, 18, 4))
    cuda = args.protocol == "gpu" and torch.cuda.is_available()
    return {
        "protocol": args.protocol,
        "factor": factor,
        "patch_size": patch,
        "train_stride": train_stride,
        "eval_stride": tuple(args.eval_stride or train_stride),
        "num_unlabelled": args.num_unlabelled if args.num_unlabelled is not None else defaults["num_unlabelled"],
        "num_workers": args.num_workers if args.num_workers is not None else defaults["num_workers"],
        "sw_batch_size": args.sw_batch_size or defaults["sw_batch_size"],
        "methods": args.methods or defaults["methods"],
        "seed": args.seed,
        "lr": args.lr,
        "rectify_fraction": args.rectify_fraction,
        "amp_dtype": "bfloat16" if args.bf16 else None,
        "compile": args.compile,
        "device": "cuda" if cuda else "cpu",
        "probe_warmup": defaults["probe_warmup"],
        "probe_iterations": defaults["probe_iterations"] if args.probe_iterations is None else args.probe_iterations,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Prepare the data, train and score every method, write the JSON and Markdown results; returns the payload."""
    try:
        return _run(argv)
    finally:
        torch.set_flush_denormal(False)  # back to the process default (set on the CPU for evaluation speed)


def _prepare_data(args: argparse.Namespace, settings: dict[str, Any]) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """Write the protocol's data copy; returns ``(its folder, data info for the JSON, {test case: original label})``."""
    source = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    if not (source / "dataset.json").is_file():
        raise FileNotFoundError(f"no dataset.json in {source}; pass --data_dir <LA folder>.")
    work = Path(args.work_dir)
    split = select_cases(source, settings["num_unlabelled"], args.max_test_cases)
    original_labels = {c["case"]: c["label"] for c in split["test"]}
    start = time.perf_counter()
    if args.protocol == "cpu":
        factor = settings["factor"]
        data_dir = write_downsampled(split, work / f"data_f{factor}", factor)
        scale = f"downsampled x{factor} per axis ({0.625 * factor:.3f} mm) for training and prediction"
    else:
        data_dir, split, size = copy_subset(split, work / "data_subset", args.max_subset_mib)
        scale = f"at full resolution, {size:.1f} MiB on disk"
    description = (
        f"{len(split['labelled'])} labelled + {len(split['unlabelled'])} unlabelled (next in train_ids) "
        f"+ {len(split['test'])} test cases, {scale}"
    )
    print(f"data: {description} -> {data_dir} ({time.perf_counter() - start:.0f} s)", flush=True)
    cases = {k: [c["case"] for c in v] for k, v in split.items()}
    info = {"description": description, "folder": str(data_dir), "cases": cases}
    return data_dir, info, original_labels


def _plan_iterations(
    args: argparse.Namespace, settings: dict[str, Any], data_dir: Path, device: torch.device, payload: dict[str, Any]
) -> int:
    """The iteration budget per method: ``--iterations``, the protocol default, or ``--train_seconds`` over the probed
    seconds per iteration (gpu); prints the expected duration when the probe ran."""
    iterations = args.iterations or PROTOCOLS[args.protocol]["iterations"]
    probe = None
    if settings["probe_iterations"] > 0:
        overrides = bundle_overrides("crln_full", settings, data_dir, Path(args.work_dir) / "probe", 1, 1)
        probe = probe_iteration(overrides, settings["probe_warmup"], settings["probe_iterations"], device)
        print(
            f"probe: crln_full {probe['s_per_iteration']:.3f} s/iteration (data loading included), "
            f"{probe['s_per_window'] * 1000:.0f} ms per sliding-window window",
            flush=True,
        )
        if iterations is None:
            iterations = max(1, int(args.train_seconds / probe["s_per_iteration"]))
            print(f"iterations: {args.train_seconds:.0f} s / {probe['s_per_iteration']:.3f} s = {iterations}")
    if iterations is None:
        raise ValueError("the gpu protocol needs --iterations when the probe is off (--probe_iterations 0).")
    epochs, epoch_length = iteration_schedule(iterations)
    iterations = epochs * epoch_length
    if probe is not None:
        methods = len(settings["methods"])
        patch, stride = settings["patch_size"], settings["eval_stride"]
        windows = sum(num_windows(nib_shape(c["image"]), patch, stride) for c in la_cases(data_dir, "test_ids"))
        train_s = methods * iterations * probe["s_per_iteration"]
        eval_s = methods * windows * probe["s_per_window"]
        print(
            f"expected: training <= {train_s / 60:.1f} min ({methods} methods x {iterations} iterations x "
            f"{probe['s_per_iteration']:.2f} s; methods without DIM/CPS are faster), sliding windows "
            f"{eval_s / 60:.1f} min ({windows} windows per method), plus metrics and ~20 s start-up per method",
            flush=True,
        )
        payload["probe"] = {**probe, "expected_train_s": train_s, "expected_sliding_window_s": eval_s}
    return iterations


def planned_overrides(data_dir: Path, settings: dict[str, Any], iterations: int) -> dict[str, Any]:
    """The data-driven choices of ``python -m crln_monai.plan`` on the protocol's data copy (:data:`PLAN_KEYS`),
    planned for the protocol's budget, device and patch volume (``max_patch_voxels``), so the run compares the
    plan's choices with the hand-written bundle's at equal iterations and equal voxels per patch."""
    from crln_monai.plan import format_table, plan_dataset

    voxels = int(np.prod(settings["patch_size"]))
    plan = plan_dataset(
        data_dir, num_labelled=NUM_LABELLED, iterations=iterations, device=settings["device"],
        max_patch_voxels=voxels, num_workers=max(1, settings["num_workers"]),
    )  # fmt: skip
    print(format_table(plan), flush=True)
    return {key: plan.overrides[key] for key in PLAN_KEYS if key in plan.overrides}


def _run_method(
    method: str,
    iterations: int,
    settings: dict[str, Any],
    data_dir: Path,
    original_labels: dict[str, str],
    work: Path,
    device: torch.device,
    plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one method through the bundle (``plan``: with the plan's choices on top), score its ``model_last.pt``;
    returns its results row."""
    from crln_monai.evaluation import write_evaluation_report

    protocol = settings["protocol"]
    name = f"{method}_plan" if plan else method
    run_dir = work / "runs" / f"{protocol}_{name}"
    epochs, epoch_length = iteration_schedule(iterations)
    overrides = {**bundle_overrides(method, settings, data_dir, run_dir, epochs, epoch_length), **(plan or {})}
    train_s = run_logged(training_command(overrides), run_dir / "train.log")
    checkpoint = run_dir / "models" / "model_last.pt"
    start = time.perf_counter()
    network = build_inference_network(overrides, checkpoint, device)
    run_settings = {**settings, "patch_size": overrides["patch_size"], "eval_stride": overrides["sw_stride"]}
    preprocessing = _parser(overrides).get_parsed_content("preprocessing_settings")
    records = evaluate_checkpoint(
        network, la_cases(data_dir, "test_ids"), original_labels, run_settings, device, preprocessing
    )
    factor = settings["factor"]
    spacing_note = (
        "original LA grid, 0.625 mm"
        if factor == 1
        else f"predicted at {0.625 * factor:.3f} mm, softmax upsampled (trilinear) to the original 0.625 mm grid"
    )
    title = f"LA {protocol} protocol: {name}, {iterations} iterations"
    summary = write_evaluation_report(records, run_dir / "report", title, str(checkpoint), spacing_note=spacing_note)
    eval_s = time.perf_counter() - start
    dice = summary["metrics"]["dice"]
    print(
        f"[{name}] Dice {100 * (dice['mean'] or 0):.2f} ± {100 * (dice['std'] or 0):.2f} % "
        f"(train {train_s:.0f} s, evaluation {eval_s:.0f} s)",
        flush=True,
    )
    return {
        "method": name,
        "protocol": protocol,
        "seed": settings["seed"],
        "iterations": iterations,
        "checkpoint": str(checkpoint),
        "train_command": " ".join(shlex.quote(a) for a in training_command(overrides)),
        "overrides": {**METHODS[method], **(plan or {})},
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "summary": summary,
        "per_case": records,
        "report_dir": str(run_dir / "report"),
        "paper_la8": None if plan else PAPER_LA8[method],
    }


def _run(argv: Sequence[str] | None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = _settings(args)
    device = torch.device(settings["device"])
    machine = machine_info(device)
    print(f"command: {command_line(__file__, argv)}")
    print(f"machine: {json.dumps(machine)}")
    data_dir, data_info, original_labels = _prepare_data(args, settings)
    payload: dict[str, Any] = {
        "script": "la_accuracy",
        "command": command_line(__file__, argv),
        "machine": machine,
        "protocol": args.protocol,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "data": data_info,
        "bootstrap_resamples": 100,
        "results": [],
    }
    out = Path(args.out)
    if args.prepare_only:
        write_json(payload, out)
        print(f"wrote {out}")
        return payload
    if device.type == "cpu":
        # eval-mode VNet activations underflow to denormals on the CPU, which made sliding windows 3-6x slower here
        payload["settings"]["flush_denormal"] = torch.set_flush_denormal(True)
    iterations = _plan_iterations(args, settings, data_dir, device, payload)
    payload["settings"]["iterations"] = iterations
    for method in settings["methods"]:
        row = _run_method(method, iterations, settings, data_dir, original_labels, Path(args.work_dir), device)
        payload["results"].append(row)
        write_json(payload, out)  # after every method, so a cut-off run keeps what it finished
    if args.plan:
        plan = planned_overrides(data_dir, settings, iterations)
        payload["plan"] = plan
        row = _run_method("crln_full", iterations, settings, data_dir, original_labels, Path(args.work_dir), device, plan)
        payload["results"].append(row)
        write_json(payload, out)
    markdown = results_markdown(payload)
    out.with_suffix(".md").write_text(markdown)
    write_json(payload, out)
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return payload


def nib_shape(path: str) -> tuple[int, ...]:
    """Spatial shape of a NIfTI file from its header."""
    import nibabel as nib

    return tuple(int(s) for s in nib.load(path).shape[:3])


if __name__ == "__main__":
    main()
