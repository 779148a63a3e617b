"""The plan's rules, one choice each, as pure functions of the survey (nnU-Net's and MONAI's: docs/planning.md).

All shapes and spacings are per axis in RAS order ``(x, y, z)``. Each function returns its value and a short
reason that the plan prints. The constants below are the calibration the rules rest on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..networks.backbone import size_divisor

__all__ = [
    "ANISOTROPY",
    "BURN_IN_SHARE",
    "LEVELS",
    "MAX_PATCH_VOXELS",
    "PAPER_ITERATIONS",
    "PAPER_LR",
    "SpacingChoice",
    "CONFIGURATIONS",
    "activation_load",
    "axis_order",
    "budget_need",
    "burn_in_reason",
    "choose_configuration",
    "choose_patch",
    "choose_split",
    "crop_hit_probability",
    "ct_statistics",
    "default_num_workers",
    "foreground_share",
    "iteration_seconds",
    "memory_gib",
    "normalisation",
    "optimisation",
    "planar_patch",
    "resampled_shape",
    "schedule",
    "sliding_window_stride",
    "target_spacing",
    "topology",
]

# ------------------------------------------------------------------------------------------- calibration

#: Measured on one H200 (docs/results.md, "Speed and memory"): CRLN on the VNet, fp32, 112×112×80 patches, batch
#: 2 labelled + 2 unlabelled, peaks at 5.26 GiB and takes 0.1214 s per iteration.
REFERENCE_PATCH: tuple[int, int, int] = (112, 112, 80)
REFERENCE_BATCH = 4
REFERENCE_PEAK_GIB = 5.26
REFERENCE_GPU_SECONDS = 0.1214
#: Same protocol on the 2-core development CPU at 64×64×48 (docs/results.md): 2.449 s per iteration.
REFERENCE_CPU_PATCH: tuple[int, int, int] = (64, 64, 48)
REFERENCE_CPU_SECONDS = 2.449
#: VNet widths of the five resolution levels at the default ``base_filters=16``.
VNET_WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256)
#: Down-sampling levels of VNet and UNet3D.
LEVELS = 4
#: An axis is pooled only while its feature map has at least this many voxels (≥ 4 after pooling; nnU-Net's rule).
MIN_POOL_SIZE = 8
#: Through-plane axis ≥ this × the in-plane spacing: anisotropic (nnU-Net's ``ANISO_THRESHOLD``).
ANISOTROPY = 3.0
#: Spacings within this relative distance of the target count as equal (no resampling).
SPACING_TOLERANCE = 0.01
#: Share of the memory the estimate may use (allocator fragmentation, CUDA context, cuDNN workspaces).
MEMORY_HEADROOM = 0.8
#: Largest patch per sample (128³, about what nnU-Net's default plans reach): a larger patch makes every iteration
#: slower in proportion, and neither the paper nor nnU-Net shows that it pays at a fixed iteration budget.
MAX_PATCH_VOXELS = 128**3
#: The paper's run (docs/method.md#hyper-parameters): 40 000 iterations, SGD lr 2.5e-3, poly per epoch; nnU-Net
#: trains 250 000.
PAPER_ITERATIONS = 40_000
NNUNET_ITERATIONS = 250_000
PAPER_LR = 2.5e-3
RECTIFY_FRACTION = 0.02
#: Fewest iterations per epoch of a short run (per-epoch work: loader restart, checkpoints, validation).
MIN_EPOCH_LENGTH = 50
#: The paper's LA protocol sees each labelled voxel this often: 40 000 iterations × 2 labelled × 112·112·80 voxels
#: over the 8 labelled LA2018 volumes (18 941 648 voxels in all) ≈ 4 238 passes.
PAPER_PASSES = PAPER_ITERATIONS * 2 * math.prod(REFERENCE_PATCH) / 18_941_648
#: Labelled crops centred on foreground: nnU-Net's floor, and the share of labelled crops that should touch it.
FOREGROUND_FLOOR = 1 / 3
FOREGROUND_TARGET = 2 / 3
#: The configurations the plan chooses between: slice-wise (``unet2d`` on one-slice patches) and volumetric.
CONFIGURATIONS = ("2d", "3d")
#: Largest slice patch of the 2-D configuration, in pixels (nnU-Net's 2d patch is the in-plane median shape; on a
#: time budget a smaller slice buys more steps).
MAX_SLICE_PIXELS = 192 * 192
#: The 2-D backbone's size divisor per in-plane axis (four 2× poolings).
SLICE_DIVISOR = 16
#: World axis letters of the RAS order, for the orientation codes that put the coarsest axis last.
RAS = "RAS"
#: Labelled + unlabelled slices per step of the 2-D configuration (long runs; short budgets take fewer, for more
#: steps: docs/results.md, "Short-budget rules"), and slices per sliding-window call.
SLICE_BATCH: tuple[int, int] = (8, 8)
SHORT_SLICE_BATCH: tuple[int, int] = (4, 4)
SLICE_WINDOWS = 16
#: 2-D reference: CRLN on the 2-D U-Net, 8 + 8 slices of 128², fp32 (s per iteration) on the 2-core CPU and the H200.
REFERENCE_SLICE_PATCH: tuple[int, int] = (128, 128)
REFERENCE_SLICE_BATCH = 16
REFERENCE_SLICE_CPU_SECONDS = 1.0
REFERENCE_SLICE_GPU_SECONDS = 0.05
#: Budgets below this many iterations get the short-budget rule (docs/results.md, "Short-budget rules"): AdamW at
#: 1e-3 (poly decay per epoch) and fewer slices per step; rectification keeps the paper's 2 % (a later start made no
#: difference on validation cases). The paper's run is 40 000 iterations.
SHORT_BUDGET = 20_000
SHORT_BUDGET_OPTIMIZER = "adamw"
SHORT_BUDGET_LR = 1e-3
#: Share of a short time budget's iterations (by time) spent on supervised burn-in steps (the trainer's
#: ``supervised_iterations``: labelled losses only, about half a full step's cost on the CPU) before the unlabelled
#: losses start: more labelled steps early, the unlabelled ones on a model that already segments (docs/results.md,
#: "Short-budget rules").
BURN_IN_SHARE = 0.5


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


# ----------------------------------------------------------------------------------------------- spacing


@dataclass(frozen=True)
class SpacingChoice:
    """Target spacing.

    Attributes:
        spacing: the spacing the rules plan with (per-axis median).
        native_axis: the anisotropic through-plane axis that keeps each case's own spacing, or ``None``.
        value: the bundle's ``target_spacing``: ``None`` (no resampling) or ``[x, y, z]`` mm.
        differing: number of cases that get resampled.
        why: the reason printed.
    """

    spacing: tuple[float, float, float]
    native_axis: int | None
    value: list[float] | None
    differing: int
    why: str


def target_spacing(spacings: np.ndarray) -> SpacingChoice:
    """Median spacing per axis; the through-plane axis stays native when it is ≥ 3× the in-plane spacing.

    Cases whose in-plane spacing differs from the median by more than 1 % are resampled; otherwise nothing is
    (``None``), and an anisotropic through-plane axis keeps each case's own slices whatever their thickness. When
    resampling is needed and the thick axis varies between cases, ``target_spacing`` (one value per axis) must name
    one: its 10th percentile, never finer than in-plane, as nnU-Net does, so that thin-slice cases are not merged
    into a coarser median (docs/planning.md#target-spacing); the others keep their slices.

    Args:
        spacings: ``(cases, 3)`` voxel sizes in mm.
    """
    median = np.median(spacings, axis=0)
    coarse = int(np.argmax(median))
    in_plane = max(float(median[a]) for a in range(3) if a != coarse)
    native = coarse if median[coarse] >= ANISOTROPY * in_plane else None
    target = median.copy()
    if native is not None:
        target[native] = max(float(np.percentile(spacings[:, native], 10)), in_plane)
    off = np.abs(spacings - target) > SPACING_TOLERANCE * target
    checked = [a for a in range(3) if a != native]
    resample = bool(off[:, checked].any())
    note = ""
    if native is not None:
        low, high = float(spacings[:, native].min()), float(spacings[:, native].max())
        spread = f"{low:g} mm" if high - low <= SPACING_TOLERANCE * median[native] else f"{low:g}–{high:g} mm"
        ratio = median[native] / in_plane
        note = f"; {'xyz'[native]} ({spread}) is {ratio:.1f}× the in-plane {in_plane:g} mm (≥ {ANISOTROPY:g}×)"
        if not resample or not off[:, native].any():
            note += ": kept native, thick slices neither merged nor interpolated"
        else:
            note += f": its 10th percentile {target[native]:g} mm (nnU-Net's rule: thin-slice cases are not merged)"
    if not resample:
        if off.any():  # only the thick axis varies: each case keeps it; plan with its median
            shared = f"share in-plane {_fmt([median[a] for a in checked])} mm (median {_fmt(median)})"
        else:
            shared = f"share {_fmt(median)} mm"
        why = f"all {len(spacings)} cases {shared}: no resampling{note}"
        return SpacingChoice(tuple(float(v) for v in median), native, None, 0, why)  # type: ignore[arg-type]
    spacing = tuple(float(v) for v in target)
    differing = int(off.any(axis=1).sum())
    why = (
        f"mixed spacings: {differing} of {len(spacings)} cases differ from {_fmt(target)} mm by > "
        f"{SPACING_TOLERANCE:.0%} and are resampled (median{' in-plane' if native is not None else ''}){note}"
    )
    value = [round(float(v), 4) for v in target]
    return SpacingChoice(spacing, native, value, differing, why)  # type: ignore[arg-type]


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], choice: SpacingChoice) -> tuple[int, int, int]:
    """Size of one case after resampling to ``choice`` (unchanged without resampling)."""
    if choice.value is None:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    return tuple(  # type: ignore[return-value]
        max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, choice.value)
    )


def axis_order(spacing: Sequence[float]) -> tuple[list[int], str, str]:
    """The network's axis order: the coarsest axis last, so that axes 0 and 1 are in-plane for every transform.

    The weak rot90/flip, the strong view's in-plane rescale, rotation and full-depth CutMix box, and the slices of
    the 2-D configuration all take axes 0 and 1 as the acquisition plane. The plan reorients each case with
    ``Orientationd`` codes that put the coarsest RAS axis last (``"ASR"`` for thick sagittal slices, ``"RSA"`` for
    thick coronal ones), an affine-aware and invertible reordering; near-isotropic data keep ``"RAS"``.

    Args:
        spacing: median spacing per RAS axis, mm.

    Returns:
        ``(order, codes, why)``: the RAS axis of each network axis, the ``orientation`` codes and the reason.
    """
    coarse = int(np.argmax(spacing))
    finest = min(spacing)
    if coarse == 2 or spacing[coarse] <= (1 + SPACING_TOLERANCE) * max(s for a, s in enumerate(spacing) if a != coarse):
        return [0, 1, 2], RAS, "RAS: axes 0 and 1 are the acquisition plane (the coarsest axis, if any, is S, last)"
    order = [a for a in range(3) if a != coarse] + [coarse]
    codes = "".join(RAS[a] for a in order)
    why = (
        f"{codes}: the coarsest axis {RAS[coarse]} ({spacing[coarse]:g} mm against {finest:g}) goes last, so that "
        "in-plane augmentation, slices and pooling act in the acquisition plane; axes below are in this order"
    )
    return order, codes, why


def choose_configuration(spacing: Sequence[float], median_shape: Sequence[int], forced: str | None) -> tuple[str, str]:
    """2-D (slice-wise) or 3-D, from the spacing of the network's axes (coarsest last) and the median shape.

    Thick slices (the last axis ≥ :data:`ANISOTROPY` × the in-plane spacing) or very few of them (fewer than 16,
    too few to pool through-plane more than once) train slice-wise: a 3-D network cannot pool the thick axis until
    the in-plane axes have caught up, so each step costs a near-whole-volume patch for little through-plane context,
    while a 2-D step is many times cheaper and a short budget is won by the number of steps (docs/results.md,
    "Own data on a budget"). nnU-Net plans both and keeps the better by cross-validation; on thick-slice cardiac
    MRI the two are close. Everything else trains in 3-D.

    Returns:
        ``(configuration, why)``, configuration in :data:`CONFIGURATIONS`.
    """
    if forced is not None:
        if forced not in CONFIGURATIONS:
            raise ValueError(f"configuration must be one of {CONFIGURATIONS}, got {forced!r}.")
        return forced, f"--configuration {forced}"
    in_plane = max(spacing[0], spacing[1])
    ratio = spacing[2] / in_plane
    if ratio >= ANISOTROPY:
        return "2d", (
            f"slices {ratio:.1f}× thicker than in-plane (≥ {ANISOTROPY:g}×): slice-wise steps are many times cheaper "
            "and a 3-D network cannot pool through-plane early"
        )
    if median_shape[2] < 16:
        return "2d", f"{median_shape[2]} slices (< 16): too few to pool through-plane; slice-wise steps"
    return "3d", f"near-isotropic ({ratio:.1f}× in-plane) with {median_shape[2]} slices: volumetric context"


def planar_patch(median_shape: Sequence[int], max_pixels: int = MAX_SLICE_PIXELS) -> tuple[list[int], str]:
    """The 2-D configuration's patch ``[h, w, 1]``: the in-plane median shape in multiples of 16, within a pixel cap.

    Each side is the median rounded down to a multiple of :data:`SLICE_DIVISOR` (at least one multiple); while the
    slice exceeds ``max_pixels``, the longer side loses one multiple.
    """
    sides = [max(SLICE_DIVISOR, int(m) // SLICE_DIVISOR * SLICE_DIVISOR) for m in median_shape[:2]]
    capped = False
    while sides[0] * sides[1] > max_pixels and max(sides) > SLICE_DIVISOR:
        longer = 0 if sides[0] >= sides[1] else 1
        sides[longer] -= SLICE_DIVISOR
        capped = True
    cover = [min(s / m, 1.0) for s, m in zip(sides, median_shape[:2])]
    why = (
        f"one slice; covers {_fmt([round(c * 100) for c in cover])} % of the in-plane median shape "
        f"{list(median_shape[:2])}, sides multiples of {SLICE_DIVISOR}"
        + (f", capped at {max_pixels:,} pixels (steps over context on a budget)" if capped else "")
    )
    return [sides[0], sides[1], 1], why


# ------------------------------------------------------------------------------------- topology, memory


def topology(patch: Sequence[int], spacing: Sequence[float]) -> list[list[int]]:
    """Per-level, per-axis down-sampling factors of the 4-level backbone for this patch (nnU-Net's pooling rule).

    At each level an axis is pooled (factor 2) when its feature map still has ≥ 8 voxels (≥ 4 after pooling) and its
    current spacing is < 2× the finest current spacing of those axes; a pooled axis doubles its spacing. So thick
    slices are not pooled until the in-plane axes have caught up, and few slices are not pooled at all.

    Returns:
        four ``[sx, sy, sz]``, finest level first, each factor 1 or 2.
    """
    size = [float(p) for p in patch]
    current = [float(s) for s in spacing]
    strides = []
    for _ in range(LEVELS):
        eligible = [a for a in range(3) if size[a] >= MIN_POOL_SIZE]
        finest = min((current[a] for a in eligible), default=0.0)
        level = [2 if a in eligible and current[a] < 2 * finest else 1 for a in range(3)]
        for a in range(3):
            if level[a] == 2:
                size[a] /= 2
                current[a] *= 2
        strides.append(level)
    return strides


def activation_load(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> float:
    """Σ over the five resolution levels of VNet width × feature-map voxels (nnU-Net's VRAM proxy,
    docs/planning.md#patch)."""
    voxels = float(math.prod(patch))
    load = VNET_WIDTHS[0] * voxels
    for width, level in zip(VNET_WIDTHS[1:], strides):
        voxels /= math.prod(level)
        load += width * voxels
    return load


def _scale(patch: Sequence[int], strides: Sequence[Sequence[int]], batch: int, reference: Sequence[int]) -> float:
    iso = [[2, 2, 2]] * LEVELS
    return activation_load(patch, strides) * batch / (activation_load(reference, iso) * REFERENCE_BATCH)


def memory_gib(patch: Sequence[int], strides: Sequence[Sequence[int]], batch: int) -> float:
    """Peak training memory (GiB, fp32): the measured 5.26 GiB at 112×112×80, batch 4, × activations × batch."""
    return REFERENCE_PEAK_GIB * _scale(patch, strides, batch, REFERENCE_PATCH)


def iteration_seconds(
    patch: Sequence[int], strides: Sequence[Sequence[int]], batch: int, device: str, configuration: str = "3d"
) -> float:
    """Seconds per iteration (fp32), scaled the same way from the H200 (``cuda``) or the 2-core CPU measurement; the
    2-D configuration scales its own reference by pixels × slices. A model only: ``--time`` measures instead."""
    if configuration == "2d":
        scale = patch[0] * patch[1] * batch / (math.prod(REFERENCE_SLICE_PATCH) * REFERENCE_SLICE_BATCH)
        return scale * (REFERENCE_SLICE_GPU_SECONDS if device == "cuda" else REFERENCE_SLICE_CPU_SECONDS)
    if device == "cuda":
        return REFERENCE_GPU_SECONDS * _scale(patch, strides, batch, REFERENCE_PATCH)
    return REFERENCE_CPU_SECONDS * _scale(patch, strides, batch, REFERENCE_CPU_PATCH)


def _fit_divisors(patch: list[int], spacing: Sequence[float]) -> tuple[list[int], list[list[int]]]:
    """Round each side down to a multiple of its stride product, recomputing the topology until both agree."""
    while True:
        strides = topology(patch, spacing)
        step = size_divisor(strides)
        fitted = [max(d, (p // d) * d) for p, d in zip(patch, step)]
        if fitted == patch:
            return patch, strides
        patch = fitted


def choose_patch(
    median_shape: Sequence[int],
    spacing: Sequence[float],
    budget_gib: float,
    batch: int,
    max_voxels: int = MAX_PATCH_VOXELS,
) -> tuple[list[int], list[list[int]], float, bool, str]:
    """Patch and strides: as much of the median shape as the memory allows (nnU-Net's loop, our memory rule).

    Start from a box of ``max_voxels`` that is isotropic in mm, clipped to the median (resampled) shape; round each
    side down to a multiple of its total stride; while the estimated memory exceeds 80 % of the budget, take one
    stride step off the side that covers the largest share of its median size.

    Returns:
        ``(patch, strides, estimated GiB, fits, why)``.
    """
    side_mm = (max_voxels * math.prod(spacing)) ** (1 / 3)
    patch = [max(1, min(int(m), int(side_mm / s + 1e-6))) for m, s in zip(median_shape, spacing)]
    capped = math.prod(patch) < math.prod(int(m) for m in median_shape)
    patch, strides = _fit_divisors(patch, spacing)
    usable = MEMORY_HEADROOM * budget_gib
    shrunk = False
    while memory_gib(patch, strides, batch) > usable:
        step = size_divisor(strides)
        shrinkable = [a for a in range(3) if patch[a] - step[a] >= step[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (patch[a] / median_shape[a], patch[a]))
        patch[axis] -= step[axis]
        patch, strides = _fit_divisors(patch, spacing)
        shrunk = True
    estimate = memory_gib(patch, strides, batch)
    fits = estimate <= usable
    cover = [min(p / m, 1.0) for p, m in zip(patch, median_shape)]
    if shrunk:
        limit = "memory"
    elif capped:
        limit = f"the {round(max_voxels ** (1 / 3))}³-voxel cap (iteration time), not memory"
    elif min(cover) < 1:
        limit = "rounding down to the stride products"
    else:
        limit = ""
    why = (
        f"covers {_fmt([round(c * 100) for c in cover])} % of the median shape {list(median_shape)}"
        + (f", limited by {limit}" if limit else "")
        + f"; sides divisible by the stride products {list(size_divisor(strides))}; "
        f"≈ {estimate:.2f} GiB fp32 at batch {batch} (5.26 GiB measured at 112×112×80, batch 4, H200, scaled by "
        f"VNet activations × batch) of {usable:.1f} usable (80 % of {budget_gib:g} GiB)"
    )
    if not fits:
        why += "; DOES NOT FIT even at the smallest patch: use bf16 (amp_dtype) or more memory"
    return patch, strides, estimate, fits, why


def sliding_window_stride(patch: Sequence[int]) -> list[int]:
    """Half the patch per axis (MONAI's ``overlap=0.5``); the LA bundle keeps UA-MT's denser ``[18, 18, 4]``."""
    return [max(1, p // 2) for p in patch]


# ----------------------------------------------------------------------------------------------- schedule


def schedule(iterations: int) -> tuple[int, int, int, str]:
    """``max_epochs × epoch_length = iterations``, about √iterations per epoch and at least :data:`MIN_EPOCH_LENGTH`.

    The poly learning rate and the rectification counter step per epoch (docs/method.md, A17), so a long run has at
    least as many epochs as iterations per epoch (40 000 → 200 × 200, the paper's). Every epoch also restarts the
    loader's workers, writes the checkpoints and may validate, a few seconds on a CPU: a short run keeps at least
    :data:`MIN_EPOCH_LENGTH` iterations per epoch so that this stays a small share of it (600 → 12 × 50). The epoch
    length is the smallest divisor of the budget from that target on; where it is far above the target (a prime
    budget), the budget is rounded to the nearest multiple of the target.

    Returns:
        ``(max_epochs, epoch_length, iterations used, why)``.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}.")
    target = max(math.isqrt(iterations), min(MIN_EPOCH_LENGTH, iterations))
    length = next(d for d in range(target, iterations + 1) if iterations % d == 0)
    used = iterations
    if length > 2 * target:
        length = target
        used = max(1, round(iterations / target)) * target
    epochs = used // length
    why = f"{epochs} epochs × {length} iterations = {used}"
    if used != iterations:
        why += f" (the budget {iterations} rounded to a multiple of {length})"
    return epochs, length, used, why


def optimisation(iterations: int, configuration: str) -> dict[str, tuple[Any, str]]:
    """Optimiser, learning rate and rectification start for the budget: the paper's values for the paper's budget,
    the short-budget rule below :data:`SHORT_BUDGET` iterations (chosen on validation cases, docs/results.md).

    Returns:
        ``{key: (value, why)}`` for ``optimizer_kind``, ``lr`` and ``rectify_start``.
    """
    rectify = (
        round(RECTIFY_FRACTION * iterations),
        f"{RECTIFY_FRACTION:.0%} of the run (the paper's 800 of {PAPER_ITERATIONS:,})",
    )
    if iterations >= SHORT_BUDGET:
        return {
            "optimizer_kind": ("sgd", "the paper's SGD (Nesterov momentum 0.9, weight decay 5e-4)"),
            "lr": (PAPER_LR, "the paper's SGD lr, poly (power 0.9) per epoch over max_epochs"),
            "rectify_start": rectify,
        }
    return {
        "optimizer_kind": (
            SHORT_BUDGET_OPTIMIZER,
            f"short budget (< {SHORT_BUDGET:,} iterations): the paper's SGD at {PAPER_LR:g} is tuned for "
            f"{PAPER_ITERATIONS:,} and learns too slowly in a few thousand steps (docs/results.md, short-budget rules)",
        ),
        "lr": (SHORT_BUDGET_LR, "short budget: AdamW's 1e-3, poly (power 0.9) per epoch over max_epochs"),
        "rectify_start": (rectify[0], rectify[1] + "; a later start made no difference on validation cases"),
    }


def burn_in_reason(supervised: int, iterations: int, share: float) -> str:
    """Why the plan gives ``supervised_iterations`` burn-in iterations (see :data:`BURN_IN_SHARE`)."""
    if not supervised:
        if share:
            return "no burn-in: the budget holds too few iterations"
        return "no burn-in (the paper): the unlabelled losses start at once; only a short --time budget has one"
    return (
        f"the first {supervised:,} of {iterations:,} iterations ({share:.0%} of their time) train on the labelled "
        "slices only, at the probe's cheaper burn-in cost; then CRLN's unlabelled losses (docs/results.md)"
    )


def budget_need(labelled_voxels: float, patch: Sequence[int], labelled_batch: int) -> tuple[int, str]:
    """Iterations the data needs: as many passes of labelled patches over the labelled voxels as the paper's run.

    The paper's LA protocol (8 labelled, 40 000 iterations of two 112×112×80 labelled crops) passes ≈ 4 240 times
    over every labelled voxel. The same number of passes over this data set's labelled voxels, clamped to the
    paper's 40 000 iterations at least (optimisation needs its steps whatever the data) and nnU-Net's 250 000 at
    most, is the need the budget is compared with.
    """
    raw = PAPER_PASSES * labelled_voxels / (labelled_batch * math.prod(patch))
    need = int(min(max(raw, PAPER_ITERATIONS), NNUNET_ITERATIONS))
    why = (
        f"{PAPER_PASSES:.0f} passes over the {labelled_voxels / 1e6:.1f} M labelled voxels (the paper's LA protocol) "
        f"by {labelled_batch} × {math.prod(patch) / 1e6:.2f} M-voxel crops = {raw:,.0f} iterations, clamped to "
        f"[{PAPER_ITERATIONS:,}, {NNUNET_ITERATIONS:,}] (the paper, nnU-Net)"
    )
    return need, why


# ----------------------------------------------------------------------------------------------- sampling


def crop_hit_probability(box: Sequence[tuple[int, int]], shape: Sequence[int], patch: Sequence[int]) -> float:
    """Probability that a uniform random crop (MONAI ``RandSpatialCropd``, after padding to the patch) overlaps the
    foreground's bounding box: per axis, the share of crop starts whose window meets ``[first, last]``."""
    probability = 1.0
    for (first, last), size, p in zip(box, shape, patch):
        if p >= size:
            continue
        starts = size - p + 1
        hits = min(size - p, last) - max(0, first - p + 1) + 1
        probability *= max(hits, 0) / starts
    return probability


def foreground_share(hit_probabilities: Sequence[float]) -> tuple[float, str]:
    """Share of labelled crops centred on a foreground voxel.

    nnU-Net forces a third of its crops onto the foreground; that is the floor. Where uniform crops miss the
    foreground often (``p`` = the median probability that a uniform crop touches its bounding box), the share ``s``
    is raised until two thirds of the labelled crops touch it, ``s + (1 − s)·p = 2/3``, at most 2/3 so that a third
    stays uniform (background context against false positives).
    """
    p = float(np.median(hit_probabilities)) if len(hit_probabilities) else 1.0
    needed = (FOREGROUND_TARGET - p) / (1 - p) if p < 1 else 0.0
    share = round(min(max(FOREGROUND_FLOOR, needed), FOREGROUND_TARGET), 3)
    if needed <= FOREGROUND_FLOOR:
        why = f"nnU-Net's third: a uniform crop touches the foreground with p = {p:.2f} (median of the labelled cases)"
    else:
        why = (
            f"a uniform crop touches the foreground with p = {p:.2f} only (median of the labelled cases): raised so "
            f"that 2/3 of labelled crops do, s + (1 − s)·p = 2/3"
        )
    return share, why + "; each crop's class drawn uniformly among the classes present, unlabelled crops uniform"


# ----------------------------------------------------------------------------------------- intensities


def normalisation(modalities: Sequence[str] | None) -> tuple[str, str]:
    """``"ct"`` when every channel is CT, else ``"zscore"`` (nnU-Net: by channel name, CT or anything else)."""
    if not modalities:
        return "zscore", "no modality in the json: per-volume z-score over nonzero voxels (nnU-Net's non-CT scheme)"
    is_ct = [m.strip().lower() == "ct" for m in modalities]
    if all(is_ct):
        return "ct", (
            "CT: clip to the foreground's 0.5–99.5 percentiles, then z-score with the foreground's mean/std "
            "(nnU-Net's CT scheme; pooled over the labelled cases)"
        )
    if any(is_ct):
        return "zscore", (
            f"mixed modalities {list(modalities)}: the pipeline has one scheme for all channels; per-volume z-score "
            "(nnU-Net would clip the CT channel)"
        )
    return "zscore", f"{'/'.join(modalities)}: per-volume per-channel z-score over nonzero voxels (nnU-Net's MR rule)"


def ct_statistics(samples: Sequence[np.ndarray]) -> tuple[list[float], list[float], str]:
    """``intensity_range`` = foreground 0.5 and 99.5 percentiles, ``intensity_stats`` = foreground mean and std.

    Several CT channels are pooled (the pipeline has one range for all channels). Percentiles are numpy's linear
    interpolation, as nnU-Net and DataAnalyzer compute them.
    """
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples])
    if values.size == 0:
        raise ValueError("no foreground voxel in the labelled cases: cannot compute CT statistics.")
    low, high = np.percentile(values, [0.5, 99.5])
    mean, std = float(values.mean()), float(values.std())
    why = f"from {values.size:,} foreground voxels of the labelled cases"
    return [round(float(low), 4), round(float(high), 4)], [round(mean, 4), round(max(std, 1e-8), 4)], why


# -------------------------------------------------------------------------------------------------- split


def choose_split(
    with_label: int, num_labelled: int | None, train_cases: int, listed_validation: int
) -> tuple[int | None, int, str]:
    """Validation cases, carved (by the datalist) from the end of the labelled train cases, never test cases.

    The json's ``val_ids`` win when present. Else, the target is 10 % of the train cases, 2 to 10: taken from the
    labelled cases beyond ``num_labelled`` when it is given (they would otherwise join the unlabelled pool), or from
    the labelled cases themselves — at most a fifth, and only when there are at least 10 — when it is not. Fewer
    than 2 spare labelled cases: no validation.

    Returns:
        ``(num_labelled or None = all remaining labelled, num_validation, why)``.
    """
    if listed_validation:
        return num_labelled, 0, f"the json's val_ids ({listed_validation} cases) are the validation list"
    target = min(max(2, round(0.1 * train_cases)), 10)
    if num_labelled is not None:
        spare = with_label - num_labelled
        source = f"{spare} labelled cases beyond num_labelled={num_labelled}"
    else:
        spare = with_label // 5 if with_label >= 10 else 0
        source = f"a fifth of the {with_label} labelled cases" if with_label >= 10 else ""
    count = min(spare, target)
    if count < 2:
        reason = f"only {with_label} labelled cases" + (f" and num_labelled={num_labelled}" if num_labelled else "")
        return num_labelled, 0, f"none: {reason}; no labelled case to spare (the last checkpoint is kept)"
    return num_labelled, count, f"{count} = 10 % of {train_cases} train cases (2–10), from {source}; never test cases"


def default_num_workers(cpu_count: int | None) -> tuple[int, str]:
    """CPU cores of this machine minus one for the main process, 1 to 8."""
    cores = cpu_count or 2
    return max(1, min(8, cores - 1)), f"this machine's {cores} cores − 1 (1–8); set it for the training machine"
