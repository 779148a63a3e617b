"""scripts/compare_nnunet.py without nnU-Net: the conversion to nnU-Net's raw layout on tiny synthetic data, the
split it shares with crln-plan, the scoring, the plans table's axis order on a fake plans json, and the one-line
refusals. nnunetv2 is never imported (CI does not install the ``compare`` extra)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import compare_nnunet as cn  # noqa: E402

from crln_monai.data import make_synthetic_dataset  # noqa: E402


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _array(path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory) -> Path:
    """Decathlon layout, 4-D 2-channel images; 6 train cases of which the first 2 have labels, 2 test cases."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("two_channel"), num_cases=8, num_test=2, shape=(12, 12, 10), num_channels=2,
        with_unlabelled_labels=False,
    )  # fmt: skip


def test_conversion_writes_labelled_cases_only_with_channels_split(two_channel, tmp_path):
    split = cn.our_split(two_channel, "dataset.json", 2)
    assert [len(split[k]) for k in ("labelled", "unlabelled", "validation", "test")] == [2, 4, 0, 2]
    folder = cn.convert_to_nnunet(
        split, tmp_path / "raw", 7, "two channel!", ["background", "foreground"], ["MRI-0", "MRI-1"]
    )
    assert folder.name == "Dataset007_two_channel"
    labelled = [i["case"] for i in split["labelled"]]
    test = [i["case"] for i in split["test"]]
    assert _names(folder / "imagesTr") == {f"{c}_{k:04d}.nii.gz" for c in labelled for k in (0, 1)}
    assert _names(folder / "labelsTr") == {f"{c}.nii.gz" for c in labelled}
    assert _names(folder / "imagesTs") == {f"{c}_{k:04d}.nii.gz" for c in test for k in (0, 1)}
    assert not (folder / "labelsTs").exists()  # our test labels stay where they are, for our scoring only
    assert not {c for c in test} & {n.split("_0")[0] for n in _names(folder / "imagesTr")}
    for item in split["labelled"]:
        source = _array(item["image"])  # (H, W, D, 2)
        for channel in (0, 1):
            written = _array(folder / "imagesTr" / f"{item['case']}_{channel:04d}.nii.gz")
            assert written.shape == source.shape[:3]
            np.testing.assert_allclose(written, source[..., channel], rtol=1e-6)
        label = nib.load(str(folder / "labelsTr" / f"{item['case']}.nii.gz"))
        assert np.issubdtype(label.get_data_dtype(), np.integer)
        np.testing.assert_array_equal(np.asanyarray(label.dataobj), _array(item["label"]))
        np.testing.assert_allclose(label.affine, nib.load(item["label"]).affine)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI-0", "1": "MRI-1"}
    assert meta["labels"] == {"background": 0, "foreground": 1}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    roles = json.loads((folder / "crln_split.json").read_text())
    assert roles["labelled"] == labelled and roles["test"] == test and len(roles["unlabelled"]) == 4


def test_validation_cases_are_left_out_and_the_split_is_crln_plans(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=14, num_test=2, shape=(16, 16, 12))
    split = cn.our_split(data, "dataset.json", 3)
    assert (split["num_labelled"], split["num_validation"]) == (3, 2) and len(split["validation"]) == 2
    from crln_monai.plan import plan_dataset

    plan = plan_dataset(data, num_labelled=3, iterations=100, device="cpu", memory_gib=4, num_workers=1)
    assert (plan.overrides["num_labelled"], plan.overrides["num_validation"]) == (3, 2)
    folder = cn.convert_to_nnunet(split, tmp_path / "raw", 1, "d", ["background", "foreground"], ["MRI"])
    written = {n.split("_0000")[0] for n in _names(folder / "imagesTr")}
    assert written == {i["case"] for i in split["labelled"]}
    assert not written & {i["case"] for i in split["validation"] + split["unlabelled"] + split["test"]}
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 3


def test_nnunet_layout_input_is_copied_byte_for_byte(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=7, num_test=2, shape=(12, 12, 10), layout="nnunet")
    split = cn.our_split(data, "dataset.json", 2)
    folder = cn.convert_to_nnunet(split, tmp_path / "raw", 2, "n", ["background", "foreground"], ["MRI"], include_test=False)
    for item in split["labelled"]:
        source = Path(item["image"])
        assert (folder / "imagesTr" / f"{item['case']}_0000.nii.gz").read_bytes() == source.read_bytes()
    assert not (folder / "imagesTs").exists()


def test_conversion_refuses_non_integer_labels_and_clashes(two_channel, tmp_path):
    split = cn.our_split(two_channel, "dataset.json", 2)
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.full((12, 12, 10), 0.5, np.float32), np.eye(4)), str(bad))
    broken = dict(split, labelled=[dict(split["labelled"][0], label=str(bad))])
    with pytest.raises(cn.CompareError, match="not integers"):
        cn.convert_to_nnunet(broken, tmp_path / "raw", 3, "b", ["background", "foreground"], ["MRI-0", "MRI-1"])
    clash = dict(split, test=split["test"] + split["labelled"][:1])
    with pytest.raises(cn.CompareError, match="both labelled and test"):
        cn.convert_to_nnunet(clash, tmp_path / "raw", 3, "b", ["background", "foreground"], ["MRI-0", "MRI-1"])
    with pytest.raises(cn.CompareError, match="channel"):
        cn.convert_to_nnunet(split, tmp_path / "raw", 3, "b", ["background", "foreground"], ["MRI"])
    with pytest.raises(cn.CompareError, match="1..999"):
        cn.nnunet_dataset_name(1000, "x")


def test_ct_like_example_is_in_hounsfield_units(tmp_path):
    data = cn.make_ct_like_dataset(tmp_path / "ct", num_cases=5, num_test=1, shape=(12, 12, 8), num_classes=3)
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"} and meta["labels"]["2"] == "core_1"
    image = nib.load(str(data / "imagesTr" / "case_000.nii.gz"))
    values = np.asanyarray(image.dataobj)
    assert values.dtype == np.int16 and -1024 <= values.min() and values.max() <= 3000 and values.std() > 100
    np.testing.assert_allclose(image.header.get_zooms(), (0.8, 0.8, 5.0))
    assert cn.make_ct_like_dataset(tmp_path / "ct", num_cases=5, num_test=1, shape=(12, 12, 8), num_classes=3) == data


# ------------------------------------------------------------------------------------------- axis order


def test_axis_mapping_undoes_the_reversal_and_transpose():
    # RAS files read by SimpleITK: reversed (S, A, R); no transpose: our R, A, S are plans axes 2, 1, 0
    assert cn.nnunet_axes_in_our_order([0, 1, 2], [0, 1, 2], "SimpleITKIO", "RAS") == [2, 1, 0]
    # thick first file axis (R): read (S, A, R), transpose_forward puts R first: plans (R, S, A); ours ASR
    assert cn.nnunet_axes_in_our_order([2, 0, 1], [0, 1, 2], "SimpleITKIO", "ASR") == [2, 1, 0]
    assert cn.nnunet_axes_in_our_order([2, 0, 1], [0, 1, 2], "SimpleITKIO", "RAS") == [0, 2, 1]
    # file voxel axes run along (S, R, A): reversed (A, R, S); the reorienting reader ignores the file order
    assert cn.nnunet_axes_in_our_order([0, 1, 2], [2, 0, 1], "NibabelIO", "RAS") == [1, 0, 2]
    assert cn.nnunet_axes_in_our_order([0, 1, 2], [2, 0, 1], "NibabelIOWithReorient", "RAS") == [2, 1, 0]
    with pytest.raises(cn.CompareError, match="reader"):
        cn.nnunet_axes_in_our_order([0, 1, 2], [0, 1, 2], "TiffIO", "RAS")
    affine = np.array([[0, 0, 2.0, 0], [-1.0, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])  # voxel axes along P, S, R
    assert cn.file_world_axes(affine) == [1, 2, 0]


def _fake_plans() -> dict:
    """nnU-Net plans of a thick-R data set (transpose_forward [2, 0, 1]): plans axes (R 6 mm, S, A)."""
    arch = {
        "n_stages": 4, "features_per_stage": [32, 64, 128, 256],
        "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 1, 2], [1, 2, 2], [2, 2, 2]],
    }  # fmt: skip
    planar = {"n_stages": 3, "features_per_stage": [32, 64, 128], "kernel_sizes": [[3, 3]] * 3,
              "strides": [[1, 1], [2, 2], [2, 2]]}  # fmt: skip
    common = {"normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
              "resampling_fn_data_kwargs": {"order": 3, "order_z": 0}, "resampling_fn_seg_kwargs": {"order": 1}}  # fmt: skip
    return {
        "transpose_forward": [2, 0, 1], "image_reader_writer": "SimpleITKIO",
        "configurations": {
            "3d_fullres": {"spacing": [6.0, 1.0, 1.25], "patch_size": [10, 48, 40], "batch_size": 2,
                           "median_image_size_in_voxels": [10.0, 44.0, 40.0], "architecture": {"arch_kwargs": arch},
                           **common},
            "2d": {"spacing": [1.0, 1.25], "patch_size": [48, 40], "batch_size": 12,
                   "median_image_size_in_voxels": [44.0, 40.0], "architecture": {"arch_kwargs": planar}, **common},
        },
    }  # fmt: skip


def _fake_ours(backbone: str, patch: list[int], strides) -> dict:
    return {
        "orientation": "ASR", "backbone": backbone, "patch_size": patch, "strides": strides, "target_spacing": None,
        "labelled_batch_size": 2, "unlabelled_batch_size": 2, "normalise": "zscore", "_median_shape": [40, 44, 10],
    }  # fmt: skip


def test_plans_table_reports_nnunets_values_in_our_axis_order():
    # files: voxel axes (R thick, A, S); ours: ASR (A, S, R); nnU-Net's plans: (R, S, A)
    ours = {"2d": _fake_ours("unet2d", [32, 32, 1], None), "3d": _fake_ours("vnet", [40, 40, 8], [[2, 2, 1]] * 4)}
    table = cn.plans_table(_fake_plans(), ours, [0, 1, 2], "2d", median_spacing=[1.25, 1.0, 6.0])
    assert table["columns"] == ["nnU-Net 3d_fullres", "nnU-Net 2d", "ours 3d", "ours 2d (chosen)"]
    assert "ASR" in table["axes"] and "2, 1, 0" in table["axes"]
    rows = {r[0]: r[1:] for r in table["rows"]}
    assert rows["target spacing (mm)"][0] == "[1.25, 1, 6]"  # A 1.25, S 1, R 6
    assert rows["target spacing (mm)"][1] == "[1.25, 1, —]"
    assert rows["median shape (voxels)"][:3] == ["[40, 44, 10]", "[40, 44, —]", "[40, 44, 10]"]
    assert rows["patch (voxels)"][:2] == ["[40, 48, 10]", "[40, 48, 1]"]  # the 2d patch covers plans axes 1, 2
    assert rows["2× poolings per axis · per level"][0] == "x3 y2 z1 · [2,1,1] [2,2,1] [2,2,2]"  # A, S, R
    assert rows["2× poolings per axis · per level"][1] == "x2 y2 z0 · [2,2,1] [2,2,1]"
    assert rows["2× poolings per axis · per level"][2].startswith("x4 y4 z0")
    assert rows["conv kernels per stage"][0] == "[3,3,1] [3,3,1] [3,3,3] [3,3,3]"
    assert rows["target spacing (mm)"][3] == "native (median [1.25, 1, 6])"
    assert rows["batch"][:3] == ["2", "12", "2 labelled + 2 unlabelled"]
    assert rows["configurations"][3] == "chosen by the rules"
    markdown = cn.table_markdown("fake", table)
    assert markdown.startswith("### fake") and markdown.count("\n| ") == len(table["rows"]) + 1


def test_plans_table_shows_ct_statistics_and_a_configuration_that_does_not_fit():
    plans = _fake_plans()
    for config in plans["configurations"].values():
        config["normalization_schemes"] = ["CTNormalization"]
    fingerprint = {"foreground_intensity_properties_per_channel": {"0": {
        "percentile_00_5": -100.0, "percentile_99_5": 800.0, "mean": 360.0, "std": 180.0}}}  # fmt: skip
    ours = {"2d": dict(_fake_ours("unet2d", [32, 32, 1], None), normalise="ct", intensity_range=[-110, 805],
                       intensity_stats=[362.5, 179.0]), "3d": None}  # fmt: skip
    table = cn.plans_table(plans, ours, [0, 1, 2], "2d", fingerprint)
    rows = {r[0]: r[1:] for r in table["rows"]}
    assert "clip [-100, 800], mean/std [360, 180]" in rows["normalisation"][0]
    assert rows["normalisation"][3] == "ct: clip [-110, 805], mean/std [362.5, 179]"
    assert rows["patch (voxels)"][2] == "does not fit"


# ------------------------------------------------------------------------------- scoring, runs, refusals


def test_scoring_uses_our_report_and_refuses_another_grid(two_channel, tmp_path):
    split = cn.our_split(two_channel, "dataset.json", 2)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for item in split["test"]:
        label = nib.load(item["label"])
        nib.save(nib.Nifti1Image(np.asanyarray(label.dataobj), label.affine), str(predictions / f"{item['case']}.nii.gz"))
    summary = cn.score_predictions(
        split["test"], lambda case: predictions / f"{case}.nii.gz", ["background", "foreground"], tmp_path / "report",
        title="t", method="m", checkpoint="c",
    )  # fmt: skip
    rows = cn.class_rows(summary)
    assert rows["foreground"]["dice"] == pytest.approx(1.0) and rows["mean"]["hd95_mm"] == pytest.approx(0.0)
    assert {"per_case.csv", "summary.json", "summary.md"} <= _names(tmp_path / "report")
    case = split["test"][0]["case"]
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(predictions / f"{case}.nii.gz"))
    with pytest.raises(cn.CompareError, match="shape"):
        cn.score_predictions(split["test"], lambda c: predictions / f"{c}.nii.gz", ["background", "foreground"],
                             tmp_path / "r2", title="t", method="m", checkpoint="c")  # fmt: skip


def test_training_progress_and_checkpoint_choice(tmp_path):
    assert cn.newest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint_best.pth").write_bytes(b"")
    (tmp_path / "checkpoint_latest.pth").write_bytes(b"")
    assert cn.newest_checkpoint(tmp_path) == "checkpoint_latest.pth"
    (tmp_path / "checkpoint_final.pth").write_bytes(b"")
    assert cn.newest_checkpoint(tmp_path) == "checkpoint_final.pth"
    (tmp_path / "training_log_2026_1_1_00_00_00.txt").write_text("x: Epoch time: 3.1 s\ny\nz: Epoch time: 3.0 s\n")
    (tmp_path / "debug.json").write_text(json.dumps({"num_iterations_per_epoch": "250"}))
    assert cn.training_progress(tmp_path) == {"epochs_done": 2, "iterations_done": 500}
    (tmp_path / "time_budget.json").write_text(json.dumps({"epochs_done": 4, "iterations_done": 70, "stop_reason": "r"}))
    assert cn.training_progress(tmp_path)["iterations_done"] == 70


def test_run_step_stops_the_whole_process_group_at_the_timeout(tmp_path):
    start = time.perf_counter()
    step = cn.run_step(["sh", "-c", "sleep 30 & sleep 30"], tmp_path / "log.txt", timeout=1)
    assert step["timed_out"] and step["returncode"] != 0 and time.perf_counter() - start < 10
    done = cn.run_step([sys.executable, "-c", "print('hi')"], tmp_path / "ok.txt")
    assert done["returncode"] == 0 and not done["timed_out"] and "hi" in (tmp_path / "ok.txt").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing_folder", "--num_labelled", "2", "--time", "1m"], "does not exist"),
        (["example:nothing", "--num_labelled", "2", "--time", "1m"], "unknown example"),
        (["example:smoke", "--num_labelled", "2"], "--time"),
        (["example:smoke", "--num_labelled", "2", "--plans_only", "--ours"], "--plans_only trains nothing"),
        (["example:smoke", "example:ct", "--num_labelled", "2", "--time", "1m"], "one data folder"),
        (["example:smoke", "example:ct", "--num_labelled", "2", "3", "4", "--plans_only"], "one value or one per"),
        (["example:smoke", "--num_labelled", "0", "--time", "1m"], ">= 1"),
        (["example:smoke", "--num_labelled", "2", "--time", "1m", "--fold", "7"], "--fold"),
        (["example:smoke", "--num_labelled", "2", "--time", "1m", "--trainer", "MyTrainer"], "--trainer"),
        (["example:smoke", "--num_labelled", "2", "--time", "soon"], "duration"),
        (["example:smoke", "--num_labelled", "2", "--time", "30s", "--ours"], "at least 1 minute"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_before_any_work(tmp_path, capsys, argv, message):
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as stop:
        cn.main([*argv, "--work_dir", str(work), "--out", str(tmp_path / "out.json")])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("compare_nnunet: ") and message in error and "\n" not in error
    assert not work.exists()


def test_out_must_be_a_json_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cn.main(["example:smoke", "--num_labelled", "2", "--plans_only", "--work_dir", str(tmp_path), "--out", "x.txt"])
    assert ".json" in capsys.readouterr().err


def test_results_markdown_and_portable_paths():
    classes = {"foreground": {"dice": 0.8, "dice_std": 0.01, "hd95_mm": 5.0, "hd95_mm_std": 1.0, "empty_predictions": 0}}
    classes["mean"] = classes["foreground"]
    payload = {
        "data": {"folder": str(cn.REPO / "data"), "num_labelled": 8, "num_unlabelled": 70, "num_validation": 2,
                 "num_test": 20},
        "command": f"{sys.executable} {cn.REPO}/scripts/compare_nnunet.py", "device": "cpu", "threads": 1,
        "machine": {"processor": "x86_64", "cpu_count": 2, "torch": "2"}, "budget_seconds": 1800,
        "results": {
            "nnunet": {"configuration": "3d_fullres", "trainer": "nnUNetTrainerTimeBudget", "checkpoint": "c.pth",
                       "training": {"iterations_done": 300, "epochs_done": 20}, "seconds": {"train": 1790.0},
                       "classes": classes},
            "crln": {"iterations": 400, "backbone": "vnet", "patch_size": [64, 64, 48], "batch": [2, 2],
                     "train_seconds": 1750.0, "classes": classes},
        },
    }  # fmt: skip
    markdown = cn.portable(cn.results_markdown(payload))
    assert "| nnU-Net 3d_fullres (labelled only) | 300 iterations in 20 epochs" in markdown
    assert "| CRLN (labelled + unlabelled) | 400 iterations" in markdown and "80.00 ± 1.00" in markdown
    assert str(cn.REPO) not in markdown and "`python scripts/compare_nnunet.py`" in markdown
    failed = dict(payload, results={"nnunet": {"error": "no checkpoint"}})
    assert "- nnunet: no checkpoint" in cn.results_markdown(failed)


def test_launcher_refuses_what_is_not_an_nnunet_command():
    done = subprocess.run([sys.executable, str(SCRIPTS / "nnunet_launch.py"), "ls"], capture_output=True, text=True)
    assert done.returncode == 2 and "not an installed nnU-Net v2 command" in done.stderr


def test_the_library_never_imports_nnunet():
    library = Path(cn.REPO / "crln_monai")
    assert not [p for p in library.rglob("*.py") if "nnunetv2" in p.read_text()]


def test_nothing_here_imported_nnunet():
    assert not [m for m in sys.modules if m.split(".")[0] in ("nnunetv2", "nnunet_time_budget")]
