"""The dataset plan: survey the data set, apply the rules, return the bundle override and the table of reasons.

:func:`plan_dataset` returns a :class:`Plan` whose ``overrides`` are top-level keys of the bundle's ``train.json``
(names fixed in the project's conventions), ready to be written as an override file.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crln_monai.data import semi_supervised_datalist
from crln_monai.data.dataset import DataSet, read_dataset

from . import probe as probe_module
from . import rules
from .checks import check_plan, check_plan_inputs
from .survey import (
    CaseHeader,
    LabelSummary,
    PlanError,
    foreground_intensities,
    read_case_header,
    read_label,
)

__all__ = ["Plan", "format_table", "parse_duration", "plan_dataset"]

DEVICES = ("cpu", "cuda")


@dataclass
class Plan:
    """A dataset plan.

    Attributes:
        overrides: bundle override, top-level ``train.json`` keys → values (JSON-serialisable).
        rows: ``(key, value shown, why)`` per choice, in print order.
        summary: lines describing the data set.
        warnings: plain-language warnings (budget, memory, absent classes).
        expected_seconds: the training run's duration estimated from the probe (with a time budget), else ``None``.
    """

    overrides: dict[str, Any]
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expected_seconds: float | None = None

    def choose(self, key: str, value: Any, why: str) -> None:
        """Set ``key`` (a choice made again replaces its row)."""
        self.overrides[key] = value
        self.rows = [row for row in self.rows if row[0] != key] + [(key, _show(value), why)]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def _duration(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``45m``, ``1h30m``, ``1.5h``, ``90s``, ``2 h`` or ``2700`` (plain seconds).

    Raises:
        ValueError: one line naming the text and the forms accepted.
    """
    cleaned = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned or any(u not in _UNITS for _, u in parts):
        raise ValueError(
            f"--time: cannot read the duration {text!r}: give a number with a unit, e.g. 45m, 1h30m, 1.5h, 90s (or "
            "plain seconds)."
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _datalist(dataset: DataSet, **kwargs: Any) -> dict[str, list[dict]]:
    try:
        return semi_supervised_datalist(dataset, **kwargs)
    except ValueError as e:
        raise PlanError(str(e)) from e


def _memory_budget(device: str, memory_gib: float | None) -> tuple[float, str]:
    if memory_gib is not None:
        if not memory_gib > 0:
            raise PlanError(f"--memory_gib must be > 0, got {memory_gib!r}.")
        return float(memory_gib), "--memory_gib"
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return props.total_memory / 2**30, f"GPU 0 of this machine ({props.name})"
        return 8.0, "no GPU on this machine: nnU-Net's 8 GiB default; pass --memory_gib for the training GPU"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return total / 2, f"half of this machine's {total:.0f} GiB of RAM"


def _check_channels(headers: Sequence[CaseHeader], modalities: list[str] | None, json_name: str) -> int:
    if modalities is not None:
        expected, source = len(modalities), f"{json_name} names {len(modalities)} channel(s) {modalities}"
    else:
        expected, source = headers[0].channels, f"as case {headers[0].case!r}"
    for header in headers:
        if header.channels != expected:
            files = ", ".join(Path(p).name for p in header.images)
            raise PlanError(
                f"case {header.case!r} ({header.role}) has {header.channels} channel(s) ({files}); "
                f"expected {expected} ({source})."
            )
    return expected


def _scaled_box(summary: LabelSummary, header: CaseHeader, choice: rules.SpacingChoice) -> list[tuple[float, float]]:
    assert summary.box is not None
    if choice.value is None:
        return [(float(a), float(b)) for a, b in summary.box]
    factors = [s / t for s, t in zip(header.spacing, choice.value)]
    return [(a * f, b * f) for (a, b), f in zip(summary.box, factors)]


def plan_dataset(
    dataset_dir: str | os.PathLike,
    datalist_file: str = "dataset.json",
    num_labelled: int | None = None,
    iterations: int = rules.PAPER_ITERATIONS,
    device: str = "cuda",
    memory_gib: float | None = None,
    max_patch_voxels: int = rules.MAX_PATCH_VOXELS,
    num_workers: int | None = None,
    time_budget: float | None = None,
    configuration: str | None = None,
    train_config: str | os.PathLike | None = None,
) -> Plan:
    """Plan a semi-supervised CRLN run on a data set folder (Decathlon or nnU-Net layout).

    The plan chooses a 2-D (slice-wise) or 3-D configuration (:func:`~crln_monai.plan.rules.choose_configuration`),
    its network input, and a schedule for the budget: ``iterations``, or ``time_budget`` seconds of training filled
    from a probe of the real run on this machine (:mod:`crln_monai.plan.probe`; each candidate configuration is
    probed and the table shows what each would get).

    Args:
        dataset_dir: the data set folder.
        datalist_file: name of the data set json inside it (optional in the nnU-Net layout).
        num_labelled: labelled cases ``N`` (the first ``N`` train cases with labels); ``None``: every labelled case
            left after validation.
        iterations: the training budget.
        device: ``"cuda"`` or ``"cpu"``: what the memory and time estimates are for.
        memory_gib: memory the patch and batch must fit (default: this machine's GPU 0, 8 GiB without one, or half
            the RAM for ``"cpu"``).
        max_patch_voxels: largest patch per sample.
        num_workers: data-loading workers (default: this machine's cores − 1, 1 to 8).
        time_budget: seconds of training to fill (``crln-plan --time``); replaces ``iterations``. The probe runs on
            this machine's ``device``: plan on the machine that will train.
        configuration: ``"2d"`` or ``"3d"`` to force one; ``None`` lets the rules choose.
        train_config: the bundle's ``train.json`` the probe builds the run from (needed with ``time_budget``).

    Returns:
        the :class:`Plan`.

    Raises:
        PlanError: no label files at all, channel counts that differ between cases or from the json, label values
            outside the json's ``labels``, bad arguments, or anything the datalist refuses (one line each).
        FileNotFoundError: the folder, json or a listed file is missing.
    """
    if device not in DEVICES:
        raise PlanError(f"device must be one of {DEVICES}, got {device!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise PlanError(f"iterations must be a positive int, got {iterations!r}.")
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and 60 <= time_budget < 365 * 86400):
        raise PlanError(f"the time budget must be between 1 minute and a year, got {time_budget!r} s.")
    if configuration is not None and configuration not in rules.CONFIGURATIONS:
        raise PlanError(f"configuration must be one of {list(rules.CONFIGURATIONS)}, got {configuration!r}.")
    if device == "cuda" and time_budget is not None:
        import torch

        if not torch.cuda.is_available():
            raise PlanError(
                "--time probes the run on this machine, which has no GPU: plan on the training machine, or use "
                "--device cpu, or give --iterations."
            )
    if time_budget is not None and (train_config is None or not Path(train_config).is_file()):
        raise PlanError(
            f"--time needs the bundle's training config to probe the run, and {train_config} is not a file: run "
            "from the repository root (bundles/custom/configs/train.json) or pass --train_config."
        )
    root = Path(os.path.abspath(dataset_dir))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist.")
    try:  # the json and the case list, read once; its 'labels' and 'channel_names' parsed before any file is read
        meta = read_dataset(root, datalist_file)
        json_classes, modalities = meta.class_names, meta.modalities
    except ValueError as e:
        raise PlanError(str(e)) from e
    json_name = datalist_file

    # every case: the full train list is "labelled = first case with labels, unlabelled = the rest"
    try:
        full = semi_supervised_datalist(meta, num_labelled=1)
    except ValueError as e:
        if not any(case.label for case in meta.train + meta.validation):
            raise PlanError(
                f"{root}: none of its cases has a label file; a plan needs labelled cases (labelsTr/<case>"
                f"{meta.raw.get('file_ending', '.nii.gz')} beside imagesTr/, or 'label' entries in {json_name})."
            ) from e
        raise PlanError(str(e)) from e
    check_plan_inputs(full)  # every file as training checks it, NaN/Inf voxels of every case included
    train_items = full["labelled"] + full["unlabelled"]
    headers = {
        role: [read_case_header(item, role) for item in items]
        for role, items in (("train", train_items), ("validation", full["validation"]), ("test", full["test"]))
    }
    development = headers["train"] + headers["validation"]
    everything = development + headers["test"]
    in_channels = _check_channels(everything, modalities, json_name)

    summaries = {h.case: read_label(h, json_classes) for h in development if h.label is not None}
    num_classes = len(json_classes) if json_classes else max(len(s.counts) for s in summaries.values())
    if num_classes < 2:
        raise PlanError(f"{root}: no label file holds a foreground value; expected labels 1.. beside background 0.")
    class_names = json_classes or ["background"] + [f"class_{i}" for i in range(1, num_classes)]

    # split
    with_label = sum(h.label is not None for h in headers["train"])
    if num_labelled is not None and (isinstance(num_labelled, bool) or not isinstance(num_labelled, int)):
        raise PlanError(f"num_labelled must be an int >= 1, got {num_labelled!r}.")
    chosen_labelled, num_validation, split_why = rules.choose_split(
        with_label, num_labelled, len(headers["train"]), len(headers["validation"])
    )
    if chosen_labelled is None and with_label >= len(headers["train"]):
        raise PlanError(
            f"{root}: all {len(headers['train'])} train cases have label files and none is left unlabelled; pass "
            f"--num_labelled N to keep the others as the unlabelled pool (the paper: 8 or 16 of LA's 80)."
        )
    split = _datalist(meta, num_labelled=chosen_labelled, num_validation=num_validation)
    by_case = {h.case: h for h in development}
    labelled = [by_case[item["case"]] for item in split["labelled"]]
    plan = Plan(overrides={})
    plan.summary.append(
        f"{meta.name}: {len(everything)} cases — {len(split['labelled'])} labelled, {len(split['unlabelled'])} "
        f"unlabelled ({len(headers['train']) - with_label} without label file), {len(split['validation'])} validation, "
        f"{len(split['test'])} test; {in_channels} channel(s); statistics from the {len(labelled)} labelled cases"
    )

    plan.choose("dataset_dir", str(root), "the data set folder (absolute)")
    plan.choose("datalist_file", datalist_file, "the data set json" + ("" if meta.path else " (absent: nnU-Net)"))
    plan.choose("num_labelled", len(split["labelled"]), "--num_labelled" if num_labelled else "all labelled cases left")
    plan.choose("num_validation", num_validation, split_why)
    plan.choose("in_channels", in_channels, "every case's channels" + (f" = {json_name}'s" if modalities else ""))
    present = np.zeros(num_classes, dtype=bool)
    for header in labelled:
        counts = summaries[header.case].counts[:num_classes]
        present[: len(counts)] |= counts > 0
    plan.choose("num_classes", num_classes, f"checked against the {len(summaries)} label files")
    plan.choose(
        "class_names",
        class_names,
        f"{json_name} 'labels'" if json_classes else "no 'labels' in the json: numbered from the label values",
    )
    for index in np.flatnonzero(~present):
        plan.warnings.append(
            f"class {index} ({class_names[index]}) is in none of the {len(labelled)} labelled cases: "
            "the network never learns it."
        )

    # spacing, axis order and shapes (RAS from the headers, then the network's order: the coarsest axis last)
    spacings = np.array([h.spacing for h in development])
    spacing_choice = rules.target_spacing(spacings)
    order, orientation, orientation_why = rules.axis_order(spacing_choice.spacing)
    plan.choose("orientation", orientation, orientation_why)
    target = None if spacing_choice.value is None else [spacing_choice.value[a] for a in order]
    plan.choose("target_spacing", target, spacing_choice.why)
    spacing = [spacing_choice.spacing[a] for a in order]
    shapes = np.array([_in_order(rules.resampled_shape(h.shape, h.spacing, spacing_choice), order) for h in development])
    median_shape = [int(round(v)) for v in np.median(shapes, axis=0)]

    # intensities
    normalise, normalise_why = rules.normalisation(modalities)
    intensity_range = intensity_stats = None
    if normalise == "ct":
        intensity_range, intensity_stats, stats_why = rules.ct_statistics(foreground_intensities(labelled))
        normalise_why += f"; {stats_why}"
    plan.choose("normalise", normalise, normalise_why)
    plan.choose("intensity_range", intensity_range, "foreground p0.5, p99.5" if intensity_range else "ct only")
    plan.choose("intensity_stats", intensity_stats, "foreground mean, std" if intensity_stats else "ct only")

    # configuration: 2-D or 3-D, then its network input (patch, strides, batch)
    configuration, configuration_why = rules.choose_configuration(spacing, median_shape, configuration)
    budget, budget_why = _memory_budget(device, memory_gib)
    network_input = functools.partial(
        _network_input, median_shape=median_shape, spacing=spacing, budget=budget, budget_why=budget_why,
        max_patch_voxels=max_patch_voxels, split=split,
    )  # fmt: skip
    short = time_budget is not None or iterations < rules.SHORT_BUDGET
    candidates = {name: network_input(name, short=short) for name in rules.CONFIGURATIONS}
    chosen = candidates[configuration]
    if configuration == "3d" and not chosen.fits:
        raise PlanError(
            f"the smallest 3-D patch {chosen.values['patch_size']} does not fit {budget:g} GiB ({budget_why}) in "
            "fp32; give more memory (--memory_gib), use bf16 (amp_dtype), or --configuration 2d."
        )
    plan.choose("backbone", chosen.values["backbone"], f"{configuration}: {configuration_why}")
    for key, (value, why) in chosen.rows.items():
        plan.choose(key, value, why)

    # sampling
    hits, fractions = [], []
    for header in labelled:
        summary = summaries[header.case]
        fractions.append(summary.foreground_fraction)
        if summary.box is not None:
            shape = _in_order(rules.resampled_shape(header.shape, header.spacing, spacing_choice), order)
            box = _in_order(_scaled_box(summary, header, spacing_choice), order)
            hits.append(rules.crop_hit_probability([(int(a), int(math.ceil(b))) for a, b in box], shape, chosen.values["patch_size"]))
    share, share_why = rules.foreground_share(hits)
    plan.choose(
        "foreground_share", share, share_why + f"; foreground = {np.median(fractions):.1%} of the volume (median)"
    )
    workers, workers_why = (num_workers, "--num_workers") if num_workers is not None else rules.default_num_workers(
        os.cpu_count()
    )
    plan.choose("num_workers", workers, workers_why)

    check_plan(plan, labelled, summaries, budget)  # what training would refuse, before any probe

    # budget: iterations given, or filled from a probe of the real run on this machine
    num_train = len(split["labelled"]) + len(split["unlabelled"])
    num_validation_cases = len(split["validation"])
    probe = None
    share = 0.0  # of the iterations' time spent on supervised burn-in steps (a short time budget only)
    if time_budget is not None:
        share = rules.BURN_IN_SHARE
        probes = {}
        for name, candidate in candidates.items():
            if name != configuration and not candidate.fits:
                continue
            probes[name] = _probe(train_config, plan.overrides | candidate.values, split, device, supervised=True)
            found, _ = probe_module.iterations_for(time_budget, probes[name], num_train, num_validation_cases, share)
            plan.summary.append(
                f"probe ({name}, this machine, {device}): {probes[name].seconds_per_iteration:.3g} s/iteration "
                f"({probes[name].seconds_per_supervised_iteration:.3g} s burn-in), "
                f"{probes[name].seconds_per_validation_case:.3g} s per validation case, "
                f"{probes[name].seconds_per_case:.3g} s per case to cache: {found:,} iterations in "
                f"{_duration(time_budget)}" + (" (chosen)" if name == configuration else "")
            )
        probe = probes[configuration]
        iterations, validations = probe_module.iterations_for(
            time_budget, probe, num_train, num_validation_cases, share
        )
        if iterations >= rules.SHORT_BUDGET:  # a long run: the paper's schedule, no burn-in
            share = 0.0
            if chosen.rows != network_input(configuration, short=False).rows:
                chosen = network_input(configuration, short=False)  # the long-run batch, probed again
                for key, (value, why) in chosen.rows.items():
                    plan.choose(key, value, why)
                probe = _probe(train_config, plan.overrides, split, device)
            iterations, validations = probe_module.iterations_for(time_budget, probe, num_train, num_validation_cases)
        budget_source = f"--time {_duration(time_budget)} over the probe's {probe.seconds_per_iteration:.3g} s/iteration"
        if share:
            budget_source += f" ({probe.seconds_per_supervised_iteration:.3g} s in the burn-in, {share:.0%} of the time)"
    else:
        validations = min(probe_module.MAX_VALIDATIONS, 40)
        budget_source = "--iterations"

    # schedule and the optimisation rules of the budget
    epochs, length, used, schedule_why = rules.schedule(iterations)
    plan.choose("max_epochs", epochs, f"{schedule_why}; {budget_source}")
    plan.choose("epoch_length", length, schedule_why)
    interval = max(1, math.ceil(epochs / max(1, validations)))
    plan.choose(
        "val_interval",
        interval,
        f"every {interval} epoch(s): {math.ceil(epochs / interval)} validations"
        + (f" (≤ {probe_module.VALIDATION_SHARE:.0%} of the budget)" if probe is not None else "")
        if num_validation or split["validation"]
        else "no validation cases: unused",
    )
    for key, (value, why) in rules.optimisation(used, configuration).items():
        plan.choose(key, value, why)
    supervised = probe_module.supervised_iterations_for(used, probe, share) if probe is not None else 0
    plan.choose("supervised_iterations", supervised, rules.burn_in_reason(supervised, used, share))

    labelled_voxels = float(
        sum(math.prod(rules.resampled_shape(h.shape, h.spacing, spacing_choice)) for h in labelled)
    )
    need, need_why = rules.budget_need(labelled_voxels, chosen.values["patch_size"], chosen.values["labelled_batch_size"])
    if probe is not None:
        seconds = probe_module.estimate_seconds(
            probe, used, epochs, num_train, num_validation_cases,
            math.ceil(epochs / interval) if num_validation_cases else 0, supervised,
        )  # fmt: skip
        plan.expected_seconds = seconds
        finish = datetime.datetime.now() + datetime.timedelta(seconds=seconds)
        plan.summary.append(
            f"budget: {used:,} iterations ≈ {_duration(seconds)} of training on this machine (measured by the probe): "
            f"ends about {finish:%H:%M} if started now"
        )
    else:
        per_iteration = rules.iteration_seconds(chosen.values["patch_size"], chosen.strides, chosen.batch, device, configuration)
        where = "an H200 (fp32)" if device == "cuda" else "the 2-core development CPU (fp32)"
        plan.summary.append(
            f"budget: {used:,} iterations ≈ {per_iteration:.2g} s each on {where} ≈ {_duration(used * per_iteration)} "
            "(a model of the reference machines; --time measures this one)"
        )
    plan.summary.append(f"this data set needs ≈ {need:,} iterations for the paper's passes ({need_why})")
    if used * 4 <= need:
        plan.warnings.append(
            f"the budget of {used:,} iterations is far below the ≈ {need:,} this data set needs for the paper's "
            f"passes; the short-budget rules above apply; more time gives better models."
        )
    elif used < need:
        plan.warnings.append(f"the budget of {used:,} iterations is below the ≈ {need:,} this data set needs.")
    return plan


@dataclass
class _Candidate:
    """One configuration's network input: bundle values, the rows to print, strides, batch and whether it fits."""

    values: dict[str, Any]
    rows: dict[str, tuple[Any, str]]
    strides: list[list[int]]
    batch: int
    fits: bool


def _network_input(
    configuration: str,
    median_shape: Sequence[int],
    spacing: Sequence[float],
    budget: float,
    budget_why: str,
    max_patch_voxels: int,
    split: dict[str, list[dict]],
    short: bool,
) -> _Candidate:
    """Backbone, patch, strides, batch and sliding window of one configuration (in the network's axis order);
    ``short``: a run below :data:`~crln_monai.plan.rules.SHORT_BUDGET` iterations (the 2-D batch follows it)."""
    rows: dict[str, tuple[Any, str]] = {}
    if configuration == "2d":
        patch, patch_why = rules.planar_patch(median_shape)
        strides: list[list[int]] = [[2, 2, 1]] * rules.LEVELS
        labelled_batch, unlabelled_batch = rules.SHORT_SLICE_BATCH if short else rules.SLICE_BATCH
        if not split["unlabelled"]:
            unlabelled_batch = 0
        rows["strides"] = (None, "2 in-plane at all 4 levels of the 2-D U-Net; slices are not pooled")
        rows["patch_size"] = (patch, patch_why)
        batch_why = (
            "slices: a short budget is won by the number of steps, so few slices per step (docs/results.md)"
            if short
            else "slices: a 2-D step is cheap, so more of them per step (SSL4MIS-style 2-D studies)"
        )
        stride = [max(1, patch[0] // 2), max(1, patch[1] // 2), 1]
        sw_batch = rules.SLICE_WINDOWS
        fits = True
        backbone = "unet2d"
    else:
        labelled_batch = min(2, len(split["labelled"]))
        unlabelled_batch = min(2, len(split["unlabelled"]))
        patch, strides, _, fits, patch_why = rules.choose_patch(
            median_shape, spacing, budget, labelled_batch + unlabelled_batch, max_patch_voxels
        )
        isotropic = all(level == [2, 2, 2] for level in strides)
        rows["strides"] = (
            None if isotropic else strides,
            "2 on every axis at all 4 levels (today's networks)"
            if isotropic
            else "per level [s0,s1,s2], finest first: an axis is pooled while its feature map keeps ≥ 4 voxels and "
            "its spacing is < 2× the finest (nnU-Net's rule)",
        )
        rows["patch_size"] = (patch, patch_why + f"; memory: {budget_why}")
        batch_why = "the paper's 2 + 2; spare memory goes to the patch"
        stride = rules.sliding_window_stride(patch)
        sw_batch = 4
        backbone = "vnet"
    rows["labelled_batch_size"] = (labelled_batch, batch_why)
    rows["unlabelled_batch_size"] = (unlabelled_batch, batch_why)
    rows["sw_stride"] = (stride, "half the patch per axis (MONAI's overlap 0.5)")
    rows["sw_batch_size"] = (sw_batch, "windows per network call in validation and inference")
    values = {key: value for key, (value, _) in rows.items()} | {"backbone": backbone}
    return _Candidate(values, rows, strides, labelled_batch + unlabelled_batch, fits)


def _probe(
    train_config: str | os.PathLike,
    overrides: dict[str, Any],
    split: dict[str, list[dict]],
    device: str,
    supervised: bool = False,
) -> Any:
    """The probe of one candidate on a few of the data set's cases (see :mod:`crln_monai.plan.probe`)."""
    labelled = split["labelled"][: probe_module.PROBE_CASES]
    unlabelled = split["unlabelled"][: probe_module.PROBE_CASES]
    validation = sorted(split["validation"], key=lambda item: str(item["case"]))[:1]
    datalist = {"labelled": labelled, "unlabelled": unlabelled, "validation": validation}
    return probe_module.probe_run(train_config, overrides, datalist, device, supervised=supervised)


def _in_order(values: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """Per-axis values (RAS order) in the network's axis order."""
    return [values[a] for a in order]


def format_table(plan: Plan) -> str:
    """The plan as printed: summary lines, one row per key (value, why), warnings."""
    key_width = max(len(k) for k, _, _ in plan.rows)
    value_width = min(max(len(v) for _, v, _ in plan.rows), 40)
    lines = list(plan.summary)
    lines.append(f"{'key':<{key_width}}  {'value':<{value_width}}  why")
    for key, value, why in plan.rows:
        lines.append(f"{key:<{key_width}}  {value:<{value_width}}  {why}")
    lines += [f"WARNING: {w}" for w in plan.warnings]
    return "\n".join(lines)
