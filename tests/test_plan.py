"""The dataset plan (``python -m crln_monai.plan``) on tiny synthetic data sets made here with nibabel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from crln_monai.plan import PlanError, format_table, plan_dataset
from crln_monai.plan import probe as probe_module
from crln_monai.plan import rules
from crln_monai.plan.planner import parse_duration
from crln_monai.plan.__main__ import main

REPO = Path(__file__).resolve().parents[1]

#: The keys a plan writes: top-level keys of the bundles' train.json (the project's fixed names).
PLAN_KEYS = {
    "dataset_dir", "datalist_file", "num_labelled", "num_validation", "in_channels", "num_classes", "class_names",
    "orientation", "target_spacing", "normalise", "intensity_range", "intensity_stats", "strides", "patch_size",
    "labelled_batch_size", "unlabelled_batch_size", "sw_stride", "foreground_share", "max_epochs", "epoch_length",
    "val_interval", "rectify_start", "lr", "num_workers", "backbone", "sw_batch_size", "optimizer_kind",
    "supervised_iterations",
}
CARDIAC_LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}


def _save(path: Path, array: np.ndarray, spacing, dtype=np.float32) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(dtype), np.diag([*spacing, 1.0])), str(path))
    return str(path)


def _heart(shape, rng) -> np.ndarray:
    """Three nested structures (1 RV, 2 MYO, 3 LV) in a small part of the field of view."""
    label = np.zeros(shape, np.uint8)
    cx, cy = shape[0] // 2 + rng.integers(-3, 4), shape[1] // 2 + rng.integers(-3, 4)
    x, y = np.ogrid[: shape[0], : shape[1]]
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    label[(r2 <= 25)[..., None] & np.ones(shape[2], bool)] = 2
    label[(r2 <= 9)[..., None] & np.ones(shape[2], bool)] = 3
    label[((x - cx + 7) ** 2 + (y - cy) ** 2 <= 6)[..., None] & np.ones(shape[2], bool)] = 1
    return label


def _cardiac(root: Path, slices=(10, 11, 12, 12, 13, 14), unlabelled=(10, 12, 14, 11), spacing=(1.5, 1.5, 8.0),
             odd_spacing: dict | None = None) -> Path:
    """4 classes, 2 channels, thick slices; image-only cases in their own folder; json named dataset_unlabelled.json.

    Labelled images are 4D files (x, y, z, 2); image-only cases are two channel files each.
    """
    rng = np.random.default_rng(0)
    training, extra = [], []
    for i, depth in enumerate(slices):
        case_spacing = (odd_spacing or {}).get(i, spacing)
        label = _heart((40, 36, depth), rng)
        image = np.stack([rng.normal(100, 10, label.shape) + 20 * label, rng.normal(50, 5, label.shape)], -1)
        training.append({
            "image": "./imagesTr/" + Path(_save(root / "imagesTr" / f"heart_{i:03d}.nii.gz", image, case_spacing)).name,
            "label": "./labelsTr/" + Path(_save(root / "labelsTr" / f"heart_{i:03d}.nii.gz", label, case_spacing,
                                                 np.uint8)).name,
        })
    for j, depth in enumerate(unlabelled):
        files = [_save(root / "imagesUnlabelled" / f"cine_{j:03d}_{c:04d}.nii.gz", rng.normal(100, 10, (40, 36, depth)),
                       spacing) for c in range(2)]
        extra.append({"image": [str(Path(f).relative_to(root)) for f in files]})
    meta = {"name": "Synthetic cine", "modality": {"0": "cine-MRI", "1": "T2"}, "labels": CARDIAC_LABELS,
            "training": training, "unlabelled": extra}
    (root / "dataset_unlabelled.json").write_text(json.dumps(meta, indent=1))
    return root


def _check_no_pooling_below(patch, strides, minimum=8):
    """No axis is down-sampled once its feature map has fewer than ``minimum`` voxels."""
    size = list(patch)
    for level in strides:
        for a in range(3):
            if level[a] == 2:
                assert size[a] >= minimum, (patch, strides)
                size[a] //= 2


def test_anisotropic_cardiac_plan_is_slice_wise(tmp_path):
    """Slices 5.3× thicker than in-plane: the plan chooses the 2-D configuration, one-slice patches of the in-plane
    median shape (in multiples of 16) and more slices per step, and says why."""
    root = _cardiac(tmp_path / "cine")
    plan = plan_dataset(root, datalist_file="dataset_unlabelled.json", device="cuda", memory_gib=8.0, num_workers=2)
    out = plan.overrides
    print(format_table(plan))
    assert set(out) == PLAN_KEYS
    why = dict((k, w) for k, _, w in plan.rows)
    assert out["backbone"] == "unet2d" and "2d: slices 5.3× thicker than in-plane" in why["backbone"]
    assert out["patch_size"] == [32, 32, 1] and out["strides"] is None  # median 40×36: multiples of 16
    assert out["sw_stride"] == [16, 16, 1] and out["sw_batch_size"] == rules.SLICE_WINDOWS
    assert (out["labelled_batch_size"], out["unlabelled_batch_size"]) == rules.SLICE_BATCH
    assert out["orientation"] == "RAS" and out["target_spacing"] is None
    assert out["max_epochs"] * out["epoch_length"] == 40_000 and out["rectify_start"] == 800 and out["lr"] == 0.0025


def test_anisotropic_cardiac_plan_in_three_dimensions(tmp_path):
    root = _cardiac(tmp_path / "cine")
    plan = plan_dataset(root, datalist_file="dataset_unlabelled.json", device="cuda", memory_gib=8.0, num_workers=2,
                        configuration="3d")
    out = plan.overrides
    assert out["backbone"] == "vnet" and "--configuration 3d" in dict((k, w) for k, _, w in plan.rows)["backbone"]
    print(format_table(plan))
    assert set(out) == PLAN_KEYS
    assert out["datalist_file"] == "dataset_unlabelled.json"
    assert out["in_channels"] == 2 and out["num_classes"] == 4
    assert out["class_names"] == ["background", "RV", "MYO", "LV"]
    assert out["normalise"] == "zscore" and out["intensity_range"] is None and out["intensity_stats"] is None
    assert out["target_spacing"] is None  # every case shares [1.5, 1.5, 8]: z stays native, nothing to resample
    assert "kept native" in dict((k, w) for k, _, w in plan.rows)["target_spacing"]
    strides, patch = out["strides"], out["patch_size"]
    assert len(strides) == 4 and all(len(level) == 3 and set(level) <= {1, 2} for level in strides)
    z_pools = sum(level[2] == 2 for level in strides)
    assert z_pools == 1  # 12 slices -> 6: one through-plane pooling, none while the in-plane spacing is finer
    assert [level[2] for level in strides[:2]] == [1, 1]
    assert all(level[:2] == [2, 2] for level in strides[:2])
    _check_no_pooling_below(patch, strides)
    for a in range(3):
        assert patch[a] % int(np.prod([level[a] for level in strides])) == 0
    assert patch[2] <= 12 and patch[:2] == [40, 32]  # median shape 40×36×12: 36 rounds down to a multiple of 8
    assert out["sw_stride"] == [p // 2 for p in patch]
    assert out["num_labelled"] == 6 and out["num_validation"] == 0  # 6 labelled cases: none to spare
    assert out["labelled_batch_size"] == 2 and out["unlabelled_batch_size"] == 2
    assert out["max_epochs"] * out["epoch_length"] == 40_000 and out["rectify_start"] == 800
    assert out["orientation"] == "RAS" and out["num_workers"] == 2
    assert out["foreground_share"] == pytest.approx(1 / 3, abs=1e-3)  # the patch covers the whole image


def test_plan_builds_the_network_and_passes_the_bundle_check(tmp_path):
    """The anisotropic plan's strides and patch make a CRLN whose output keeps the patch shape, and the plan merged
    onto the LA training config passes the bundles' own config check."""
    import torch
    from monai.bundle import ConfigParser

    from crln_monai.workflow import check_config
    from crln_monai.networks import CRLN

    for configuration in ("2d", "3d"):
        out = plan_dataset(_cardiac(tmp_path / configuration), datalist_file="dataset_unlabelled.json", memory_gib=8.0,
                           configuration=configuration).overrides
        net = CRLN(in_channels=out["in_channels"], num_classes=out["num_classes"], patch_size=out["patch_size"],
                   strides=out["strides"], backbone=out["backbone"])
        logits = net(torch.zeros(2, out["in_channels"], *out["patch_size"])).logits
        assert logits.shape == (2, 4, *out["patch_size"])
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / "la" / "configs" / "train.json"))
        parser.update(out)
        check_config(parser)


def test_ten_slices_allow_one_through_plane_pooling(tmp_path):
    root = _cardiac(tmp_path / "cine", slices=(10,) * 5, unlabelled=(10, 10))
    out = plan_dataset(root, datalist_file="dataset_unlabelled.json", memory_gib=8.0, configuration="3d").overrides
    assert out["patch_size"][2] == 10
    assert [level[2] for level in out["strides"]] == [1, 1, 2, 1]


def test_mixed_spacings_are_resampled_and_reported(tmp_path):
    odd = {0: (1.2, 1.2, 8.0), 1: (1.5, 1.5, 10.0)}
    root = _cardiac(tmp_path / "cine", odd_spacing=odd)
    plan = plan_dataset(root, datalist_file="dataset_unlabelled.json", memory_gib=8.0)
    # in-plane: case 0 differs from the median 1.5 mm; thick z (8 and 10 mm) takes its 10th percentile, 8 mm
    assert plan.overrides["target_spacing"] == [1.5, 1.5, 8.0]
    why = dict((k, w) for k, _, w in plan.rows)["target_spacing"]
    assert "2 of 10 cases differ" in why and "8–10 mm" in why and "10th percentile 8 mm" in why


def _ct(root: Path) -> Path:
    """Two labelled CT cases whose foreground holds 0..499 and 500..999, one more labelled case (kept in the
    unlabelled pool by num_labelled=2) whose foreground holds 5000, and one image-only case."""
    rng = np.random.default_rng(1)
    training = []
    for i, values in enumerate([np.arange(500), np.arange(500, 1000), np.full(500, 5000)]):
        label = np.zeros((20, 20, 20), np.uint8)
        label[5:15, 5:15, 5:10] = 1  # 500 voxels
        image = np.full(label.shape, -1000.0)
        image[label == 1] = rng.permutation(values)
        training.append({"image": _save(root / f"ct_{i}.nii.gz", image, (1, 1, 1)),
                         "label": _save(root / f"ct_{i}_seg.nii.gz", label, (1, 1, 1), np.uint8)})
    training.append({"image": _save(root / "ct_3.nii.gz", np.full((20, 20, 20), -1000.0), (1, 1, 1))})
    meta = {"modality": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_ct_normalisation_uses_labelled_foreground_percentiles(tmp_path):
    out = plan_dataset(_ct(tmp_path / "ct"), num_labelled=2, memory_gib=8.0).overrides
    assert out["normalise"] == "ct"
    assert out["class_names"] == ["background", "liver"]
    values = np.arange(1000.0)  # the two labelled cases' foreground; the third case's 5000s are left out
    assert out["intensity_range"] == pytest.approx([4.995, 994.005], abs=1e-3)
    assert out["intensity_range"] == pytest.approx(np.percentile(values, [0.5, 99.5]).tolist(), abs=1e-3)
    assert out["intensity_stats"] == pytest.approx([499.5, values.std()], abs=1e-3)


def test_a_class_missing_from_the_labelled_cases_is_warned(tmp_path):
    root = _ct(tmp_path / "ct")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "liver", "2": "tumour"}
    (root / "dataset.json").write_text(json.dumps(meta))
    plan = plan_dataset(root, num_labelled=2, memory_gib=8.0)
    assert plan.overrides["num_classes"] == 3
    assert any("class 2 (tumour) is in none of the 2 labelled cases" in w for w in plan.warnings)


def test_no_label_files_at_all(tmp_path):
    for i in range(3):
        _save(tmp_path / "imagesTr" / f"c{i}_0000.nii.gz", np.zeros((8, 8, 8)), (1, 1, 1))
    with pytest.raises(PlanError, match=r"none of its cases has a label file.*labelsTr/<case>\.nii\.gz"):
        plan_dataset(tmp_path)


def test_every_case_labelled_needs_num_labelled(tmp_path):
    root = _cardiac(tmp_path / "cine", unlabelled=())
    with pytest.raises(PlanError, match=r"all 6 train cases have label files.*pass --num_labelled N"):
        plan_dataset(root, datalist_file="dataset_unlabelled.json")
    out = plan_dataset(root, datalist_file="dataset_unlabelled.json", num_labelled=2).overrides
    assert (out["num_labelled"], out["num_validation"]) == (2, 2)  # 10 % of 6 -> 2, from the 4 spare labelled


def test_channel_counts_differ(tmp_path):
    root = _cardiac(tmp_path / "cine")
    path = str(root / "imagesTr" / "heart_002.nii.gz")
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., :1], image.affine), path)
    expected = r"case 'heart_002' \(train\) has 1 channel\(s\).*expected 2 \(dataset_unlabelled\.json names 2"
    with pytest.raises(PlanError, match=expected):
        plan_dataset(root, datalist_file="dataset_unlabelled.json")


def test_label_values_outside_the_json_labels(tmp_path):
    root = _cardiac(tmp_path / "cine")
    path = root / "labelsTr" / "heart_004.nii.gz"
    label = np.asarray(nib.load(str(path)).dataobj).copy()
    label[0, 0, 0] = 5
    _save(path, label, (1.5, 1.5, 8.0), np.uint8)
    with pytest.raises(PlanError, match=r"case 'heart_004'.*value\(s\) \[5\]; expected the json's labels 0\.\.3 "
                                        r"\(0 background, 1 RV, 2 MYO, 3 LV\)"):
        plan_dataset(root, datalist_file="dataset_unlabelled.json")


def test_command_line_writes_the_override_and_fails_in_one_line(tmp_path, capsys):
    root = _cardiac(tmp_path / "cine")
    output = tmp_path / "plans" / "plan.json"
    status = main([str(root), "--output", str(output), "--datalist_file", "dataset_unlabelled.json",
                   "--iterations", "600", "--device", "cpu", "--memory_gib", "4"])
    assert status == 0
    written = json.loads(output.read_text())
    assert set(written) == PLAN_KEYS
    assert written["max_epochs"] * written["epoch_length"] == 600
    assert written["rectify_start"] == 12 and written["lr"] == rules.SHORT_BUDGET_LR  # the short-budget rule
    assert (written["labelled_batch_size"], written["unlabelled_batch_size"]) == rules.SHORT_SLICE_BATCH
    printed = capsys.readouterr().out
    assert "patch_size" in printed and "WARNING: the budget of 600 iterations is far below" in printed
    custom = REPO / "bundles" / "custom" / "configs" / "train.json"
    if custom.is_file():  # the plan only overrides keys the bundle defines
        assert set(written) <= set(json.loads(custom.read_text()))

    status = main([str(tmp_path / "plans"), "--output", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("crln-plan: ") and err.count("\n") == 1


@pytest.mark.parametrize("iterations", [40_000, 600, 997, 12_345, 30, 1])
def test_schedule_arithmetic(iterations):
    epochs, length, used, _ = rules.schedule(iterations)
    assert epochs * length == used and abs(used - iterations) <= length // 2 + 1
    assert length >= min(rules.MIN_EPOCH_LENGTH, iterations)  # per-epoch work stays a small share of short runs
    assert epochs >= length or length == rules.MIN_EPOCH_LENGTH or epochs == 1
    if iterations == 40_000:
        assert (epochs, length, used, round(rules.RECTIFY_FRACTION * used)) == (200, 200, 40_000, 800)
    if iterations == 600:
        assert (epochs, length, used) == (12, 50, 600)
    if iterations == 997:  # prime: rounded to a multiple of 50
        assert (epochs, length, used) == (20, 50, 1000)
    if iterations == 30:  # shorter than one epoch of 50: one epoch
        assert (epochs, length, used) == (1, 30, 30)


def test_memory_rule_is_the_calibration_at_the_reference():
    iso = [[2, 2, 2]] * 4
    assert rules.memory_gib([112, 112, 80], iso, 4) == pytest.approx(5.26)
    assert rules.memory_gib([112, 112, 80], iso, 2) == pytest.approx(2.63)
    assert rules.memory_gib([224, 112, 80], iso, 4) == pytest.approx(10.52)


def test_foreground_share_rule():
    assert rules.foreground_share([1.0, 0.9])[0] == pytest.approx(1 / 3, abs=1e-3)
    assert rules.foreground_share([0.0])[0] == pytest.approx(2 / 3, abs=1e-3)
    share = rules.foreground_share([0.2])[0]  # s + (1 - s)·0.2 = 2/3
    assert share + (1 - share) * 0.2 == pytest.approx(2 / 3, abs=1e-3)
    # window 10 over 100 voxels, foreground in [10, 20]: starts 1..20 of 0..90 meet it
    assert rules.crop_hit_probability([(10, 20)], [100], [10]) == pytest.approx(20 / 91)


def test_la2018_plan(la_dir):
    plan = plan_dataset(la_dir, num_labelled=8, memory_gib=139.0, device="cuda", num_workers=4)
    print(format_table(plan))
    out = plan.overrides
    assert (out["in_channels"], out["num_classes"]) == (1, 2)
    assert out["class_names"] == ["background", "left_atrium"]
    assert out["target_spacing"] is None and out["strides"] is None and out["normalise"] == "zscore"
    assert out["patch_size"] == [128, 128, 80] and out["num_labelled"] == 8 and out["num_validation"] == 8
    assert (out["max_epochs"], out["epoch_length"], out["rectify_start"]) == (200, 200, 800)


def test_thick_axis_first_goes_last_in_the_network_order(tmp_path):
    """Thick sagittal slices (x coarsest): the plan orients the cases "ASR" so the thick axis is last, and states
    patch, strides and spacing in that order; the same anatomy with thick axial slices plans the same network."""
    axial = plan_dataset(_cardiac(tmp_path / "axial"), datalist_file="dataset_unlabelled.json", memory_gib=8.0,
                         configuration="3d").overrides
    sagittal_root = _cardiac(tmp_path / "sagittal", spacing=(8.0, 1.5, 1.5))
    for path in sagittal_root.rglob("*.nii.gz"):  # move z first: the thick axis is now x
        image = nib.load(str(path))
        array = np.moveaxis(np.asarray(image.dataobj), 2, 0)
        nib.save(nib.Nifti1Image(array, np.diag([8.0, 1.5, 1.5, 1.0])), str(path))
    plan = plan_dataset(sagittal_root, datalist_file="dataset_unlabelled.json", memory_gib=8.0, configuration="3d")
    out = plan.overrides
    assert out["orientation"] == "ASR" and "the coarsest axis R" in dict((k, w) for k, _, w in plan.rows)["orientation"]
    for key in ("patch_size", "strides", "sw_stride", "target_spacing"):
        assert out[key] == axial[key], key
    assert plan_dataset(sagittal_root, datalist_file="dataset_unlabelled.json").overrides["backbone"] == "unet2d"


def test_axis_order_and_configuration_rules():
    assert rules.axis_order([0.8, 0.8, 5.0])[:2] == ([0, 1, 2], "RAS")
    assert rules.axis_order([5.0, 0.8, 0.8])[:2] == ([1, 2, 0], "ASR")
    assert rules.axis_order([0.8, 5.0, 0.8])[:2] == ([0, 2, 1], "RSA")
    assert rules.axis_order([1.0, 1.0, 1.0])[:2] == ([0, 1, 2], "RAS")
    assert rules.axis_order([1.005, 1.0, 1.0])[:2] == ([0, 1, 2], "RAS")  # within 1 %: no reordering
    assert rules.choose_configuration([1.5, 1.5, 10.0], [200, 200, 10], None)[0] == "2d"
    assert rules.choose_configuration([1.0, 1.0, 2.9], [200, 200, 60], None)[0] == "3d"
    assert rules.choose_configuration([1.0, 1.0, 1.0], [200, 200, 12], None)[0] == "2d"  # too few slices
    assert rules.choose_configuration([0.625] * 3, [192, 142, 88], None)[0] == "3d"  # LA at full resolution
    assert rules.choose_configuration([1.5, 1.5, 10.0], [200, 200, 10], "3d") == ("3d", "--configuration 3d")
    with pytest.raises(ValueError, match="configuration must be one of"):
        rules.choose_configuration([1, 1, 1], [8, 8, 8], "2.5d")


def test_planar_patch_rule():
    assert rules.planar_patch([192, 142, 11])[0] == [192, 128, 1]
    assert rules.planar_patch([8, 40, 11])[0] == [16, 32, 1]  # at least one multiple of 16
    patch, why = rules.planar_patch([400, 300, 10], max_pixels=192 * 192)
    assert patch[0] * patch[1] <= 192 * 192 and patch[0] % 16 == patch[1] % 16 == 0 and "capped" in why
    assert patch == [192, 192, 1]  # [400, 288]: the longer side loses 16 at a time, then both, until ≤ 192²


@pytest.mark.parametrize(
    "text, seconds",
    [("45m", 2700), ("1h30m", 5400), ("1.5h", 5400), ("90s", 90), ("2 h", 7200), ("2700", 2700), ("1d", 86400),
     ("10min", 600)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "45 minutes", "1h30", "-5m", "3weeks"])
def test_parse_duration_refuses_unclear_text(text):
    with pytest.raises(ValueError, match="cannot read the duration"):
        parse_duration(text)


def test_short_budget_rules():
    short = rules.optimisation(1_000, "2d")
    assert (short["optimizer_kind"][0], short["lr"][0]) == ("adamw", 1e-3)
    assert short["rectify_start"][0] == 20  # the paper's 2 %
    paper = rules.optimisation(40_000, "3d")
    assert (paper["optimizer_kind"][0], paper["lr"][0], paper["rectify_start"][0]) == ("sgd", rules.PAPER_LR, 800)


def test_iterations_filling_a_budget_by_hand():
    """600 s, start 20 s, 10 cases × 1 s to cache, 2 validation cases × 5 s; 0.5 s per iteration, 1 s per epoch end.
    Validations: min(20, 8 % of 600 / 10) = 4 (40 s). Left: 600 − 20 − 10 − 40 = 530 = 0.5·n + √n → √n = 31.56."""
    probe = probe_module.Probe(
        seconds_start=20.0, seconds_per_case=1.0, seconds_per_iteration=0.5, seconds_per_validation_case=5.0,
        seconds_per_epoch_end=1.0, timed_iterations=6,
    )  # fmt: skip
    iterations, validations = probe_module.iterations_for(600.0, probe, 10, 2)
    assert validations == 4
    root = (-1 + (1 + 4 * 0.5 * 530) ** 0.5) / (2 * 0.5)
    assert iterations == int(root * root) == 996
    estimate = probe_module.estimate_seconds(probe, iterations, round(iterations**0.5), 10, 2, validations)
    assert estimate == pytest.approx(600.0, abs=1.0)
    assert probe_module.iterations_for(25.0, probe, 10, 2)[0] == 1  # nothing left after the start-up: one iteration


def test_burn_in_share_of_a_budget_by_hand():
    """Half the iterations' time on burn-in steps of 0.25 s, half on full steps of 1 s: the mean step is
    1 / (0.5/0.25 + 0.5/1) = 0.4 s. No validation, no epoch cost: 400 s left after the start → 1000 iterations,
    of which 800 burn-in (200 s) and 200 full (200 s)."""
    probe = probe_module.Probe(
        seconds_start=100.0, seconds_per_case=0.0, seconds_per_iteration=1.0, seconds_per_validation_case=0.0,
        seconds_per_epoch_end=0.0, timed_iterations=6, seconds_per_supervised_iteration=0.25,
    )  # fmt: skip
    iterations, validations = probe_module.iterations_for(500.0, probe, 10, 0, supervised_share=0.5)
    assert (iterations, validations) == (1000, 0)
    supervised = probe_module.supervised_iterations_for(iterations, probe, 0.5)
    assert supervised == 800
    assert probe_module.estimate_seconds(probe, iterations, 1, 10, 0, 0, supervised) == pytest.approx(500.0)
    assert probe_module.supervised_iterations_for(iterations, probe, 0.0) == 0
    assert probe_module.iterations_for(500.0, probe, 10, 0)[0] == 400  # no share: full steps only
    unprobed = probe_module.Probe(**{**probe.__dict__, "seconds_per_supervised_iteration": None})
    with pytest.raises(ValueError, match="supervised=True"):
        probe_module.iterations_for(500.0, unprobed, 10, 0, supervised_share=0.5)


def test_burn_in_reasons():
    assert "the first 800 of 1,000 iterations (50% of their time)" in rules.burn_in_reason(800, 1000, 0.5)
    assert rules.burn_in_reason(0, 1000, 0.0).startswith("no burn-in (the paper)")


@pytest.mark.slow
def test_time_budget_probes_each_configuration(tmp_path, capsys):
    """--time runs the probe of both configurations on this machine through the custom bundle's train.json, picks
    the iterations that fill the budget, and prints the expected duration and end."""
    from crln_monai.data import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", num_cases=10, num_test=2, shape=(32, 32, 8),
                                  spacing=(1.0, 1.0, 4.0), with_unlabelled_labels=False)
    output = tmp_path / "plan.json"
    status = main([str(root), "--output", str(output), "--device", "cpu", "--time", "3m", "--num_labelled", "2",
                   "--num_workers", "0", "--train_config", str(REPO / "bundles" / "custom" / "configs" / "train.json")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert printed.count("probe (") == 2 and "probe (2d, this machine, cpu)" in printed and "(chosen)" in printed
    assert "of training on this machine (measured by the probe): ends about" in printed
    written = json.loads(output.read_text())
    assert written["backbone"] == "unet2d" and written["max_epochs"] * written["epoch_length"] > 10
    assert 0 < written["supervised_iterations"] < written["max_epochs"] * written["epoch_length"]  # the burn-in
    assert re.search(r"probe \(2d, this machine, cpu\): [0-9.]+ s/iteration \([0-9.]+ s burn-in\)", printed)
    with pytest.raises(SystemExit):  # one budget, not two
        main([str(root), "--output", str(output), "--time", "3m", "--iterations", "5"])


def test_a_time_budget_for_a_gpu_is_planned_on_the_gpu(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = _cardiac(tmp_path / "cine")
    with pytest.raises(PlanError, match=r"--time probes the run on this machine, which has no GPU"):
        plan_dataset(root, datalist_file="dataset_unlabelled.json", device="cuda", time_budget=600.0,
                     train_config=REPO / "bundles" / "custom" / "configs" / "train.json")
