"""Data checked before any work (crln_monai.data.checks), the CacheDataset that fails cleanly, converters' refusals,
and a bundle run on a data set with a truncated file: exit status 1 and the file named."""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Lambda

from crln_monai.data import CacheDataset, CaseLoadError, check_cases, make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
SHAPE = (8, 7, 6)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _case(root: Path, name: str = "a", image: np.ndarray | None = None, label: np.ndarray | None = None, **kw) -> dict:
    rng = np.random.default_rng(0)
    image = rng.random(SHAPE, dtype=np.float32) if image is None else image
    label = (rng.random(SHAPE) > 0.5).astype(np.uint8) if label is None else label
    return {
        "image": _save(root / "imagesTr" / f"{name}.nii.gz", image, kw.get("image_affine")),
        "label": _save(root / "labelsTr" / f"{name}.nii.gz", label, kw.get("label_affine")),
        "case": name,
    }


def _refused(items, error=ValueError, in_channels=1, num_classes=2, **kw) -> str:
    with pytest.raises(error) as info:
        check_cases(items, in_channels, num_classes, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------- accepted


def test_valid_cases_pass_and_come_back_unchanged(tmp_path):
    items = [_case(tmp_path, "a"), _case(tmp_path, "b")]
    assert check_cases(items, 1, 2, check_finite=True) == items
    assert check_cases((i["image"] for i in items), 1) == [i["image"] for i in items]  # plain inference paths
    assert check_cases([], 1, 2) == []


def test_channels_from_a_4d_image_or_a_list_of_channel_files(tmp_path):
    four_d = _save(tmp_path / "x4.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    files = [_save(tmp_path / f"c_000{c}.nii.gz", np.zeros(SHAPE, np.float32)) for c in range(2)]
    label = _save(tmp_path / "l.nii.gz", np.zeros(SHAPE, np.uint8))
    check_cases([{"image": four_d, "label": label}, {"image": files, "label": label}], 2, 2, check_finite=True)


def test_multi_member_gzip_and_uncompressed_nifti_pass(tmp_path):
    item = _case(tmp_path)
    raw = gzip.decompress(Path(item["image"]).read_bytes())
    Path(item["image"]).write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:]))  # trailer != full size
    plain = tmp_path / "plain.nii"
    plain.write_bytes(raw)
    check_cases([item, {"image": str(plain), "label": item["label"]}], 1, 2, check_finite=True)


def test_affine_within_tolerance_passes(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 5e-4
    check_cases([_case(tmp_path, label_affine=shifted)], 1, 2)


# --------------------------------------------------------------------------------------------------- refused


def test_missing_file(tmp_path):
    item = _case(tmp_path)
    os.remove(item["label"])
    message = _refused([item], FileNotFoundError)
    assert message.startswith("label (case 'a') ") and item["label"] in message and "not found" in message


def test_truncated_nii_gz_is_found_from_the_header_pass(tmp_path):
    item = _case(tmp_path, image=np.random.default_rng(1).random((20, 20, 20), dtype=np.float32),
                 label=np.zeros((20, 20, 20), np.uint8))  # fmt: skip
    data = Path(item["image"]).read_bytes()
    Path(item["image"]).write_bytes(data[: len(data) // 2])
    message = _refused([item])  # headers only (check_finite False): still found
    assert message.startswith(f"image (case 'a') {item['image']} is truncated")
    assert "expected a complete .nii.gz file" in message


def test_truncated_uncompressed_nii(tmp_path):
    path = tmp_path / "x.nii"
    raw = gzip.decompress(Path(_case(tmp_path)["image"]).read_bytes())
    path.write_bytes(raw[:-10])
    message = _refused([str(path)])
    expected = f"image {path} is truncated: {len(raw) - 10} bytes of NIfTI data where its header announces {len(raw)}"
    assert expected in message


@pytest.mark.parametrize("name, payload", [
    ("garbage.nii.gz", os.urandom(3000)),
    ("garbage.nii", os.urandom(3000)),
    ("empty.nii.gz", b""),
    ("text.nii.gz", gzip.compress(b"not a nifti header " * 40)),
])  # fmt: skip
def test_garbage_files_are_named(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    message = _refused([{"image": str(path), "case": "g"}])
    assert message.startswith(f"image (case 'g') {path} cannot be read (") or f"{path} is truncated" in message


def test_2d_and_5d_images(tmp_path):
    flat = _save(tmp_path / "flat.nii.gz", np.zeros((8, 7), np.float32))
    assert f"image {flat} is 2-D (shape (8, 7)); expected a 3-D volume (H, W, D)" in _refused([flat])
    five = _save(tmp_path / "five.nii.gz", np.zeros((*SHAPE, 1, 2), np.float32))
    assert f"image {five} is 5-D" in _refused([five])


def test_wrong_channel_count(tmp_path):
    series = _save(tmp_path / "t.nii.gz", np.zeros((*SHAPE, 3), np.float32))  # a time series read as 3 channels
    message = _refused([series])
    assert f"image {series} (shape (8, 7, 6, 3)) has 3 channel(s); expected in_channels=1" in message
    files = [_save(tmp_path / f"c{c}.nii.gz", np.zeros(SHAPE, np.float32)) for c in range(2)]
    message = _refused([{"image": files}], in_channels=3)
    assert "2 channel files" in message and files[1] in message and "expected in_channels=3" in message


def test_channel_files_on_different_grids(tmp_path):
    files = [_save(tmp_path / "c0.nii.gz", np.zeros(SHAPE, np.float32)),
             _save(tmp_path / "c1.nii.gz", np.zeros((8, 7, 5), np.float32))]  # fmt: skip
    assert f"image {files[1]} has spatial shape (8, 7, 5), first channel file {files[0]} has (8, 7, 6)" in _refused(
        [{"image": files}], in_channels=2
    )


@pytest.mark.parametrize("value, counts", [(np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf")])
def test_nan_or_inf_voxel_with_check_finite(tmp_path, value, counts):
    image = np.ones(SHAPE, np.float32)
    image[2, 3, 4] = value
    item = _case(tmp_path, image=image)
    assert check_cases([item], 1, 2) == [item]  # headers only: the voxels are not read
    message = _refused([item], check_finite=True)
    assert message == (
        f"image (case 'a') {item['image']}: {counts} voxels of {image.size} (first at voxel (2, 3, 4)); "
        "expected finite intensities."
    )


@pytest.mark.parametrize("bad, shown", [(3, "[3]"), (-1, "[-1]"), (0.5, "[0.5]")])
def test_label_values_outside_the_classes(tmp_path, bad, shown):
    label = np.zeros(SHAPE, np.float32 if bad == 0.5 else np.int16)
    label[1, 1, 1] = bad
    item = _case(tmp_path, label=label)
    message = _refused([item])
    assert message == (
        f"label (case 'a') {item['label']} holds values {shown} that are not class indices; expected integers in "
        "0..1 (num_classes=2)."
    )
    check_cases([item], 1, None)  # values not checked without num_classes


def test_label_shape_and_affine_mismatch(tmp_path):
    item = _case(tmp_path, label=np.zeros((8, 7, 5), np.uint8))
    assert f"label (case 'a') {item['label']} has spatial shape (8, 7, 5), image {item['image']} has (8, 7, 6)" in (
        _refused([item])
    )
    shifted = np.eye(4)
    shifted[2, 3] = 0.5
    item = _case(tmp_path / "b", label_affine=shifted)
    message = _refused([item])
    assert f"{item['label']} and image {item['image']} have different affines (largest difference 0.5 > 0.001)" in (
        message
    )
    four = _case(tmp_path / "c", label=np.zeros((*SHAPE, 2), np.uint8))
    assert "expected a 3-D label map" in _refused([four])


def test_degenerate_affine(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)  # a zero voxel size on the second axis
    path = str(tmp_path / "d.nii")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), None, header), path)
    assert f"image {path} has a degenerate affine" in _refused([path])


# ------------------------------------------------------------------------------------------ CacheDataset


def test_cache_dataset_names_the_failing_case_and_leaves_no_thread_running():
    def load(item):
        if item["case"] == "bad":
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        time.sleep(0.05)
        return item

    items = [{"case": f"c{i}", "image": f"/x/c{i}.nii.gz"} for i in range(12)]
    items.insert(3, {"case": "bad", "image": "/x/bad.nii.gz", "label": "/x/bad_label.nii.gz"})
    before = threading.active_count()
    with pytest.raises(CaseLoadError) as info:
        CacheDataset(items, Lambda(load), num_workers=4, progress=False)
    assert str(info.value) == (
        "loading case 'bad', image /x/bad.nii.gz, label /x/bad_label.nii.gz failed: EOFError: Compressed file ended "
        "before the end-of-stream marker was reached"
    )
    assert threading.active_count() == before  # the pool's threads were joined before the error left
    dataset = CacheDataset(items[:3], Lambda(load), num_workers=2, progress=False)  # MONAI's cache otherwise
    assert [dataset[i]["case"] for i in range(3)] == ["c0", "c1", "c2"] and threading.active_count() == before


def test_training_pipeline_refuses_a_nan_case_while_caching_naming_it(tmp_path):
    from crln_monai.data import semi_supervised_train_transforms

    image = np.ones(SHAPE, np.float32)
    image[0, 0, 0] = np.nan
    items = [_case(tmp_path, "a"), _case(tmp_path, "b", image=image), _case(tmp_path, "c")]
    before = threading.active_count()
    with pytest.raises(CaseLoadError) as info:
        CacheDataset(items, semi_supervised_train_transforms([8, 8, 8], 2), num_workers=2, progress=False)
    message = str(info.value)
    assert message.startswith(f"loading case 'b', image {items[1]['image']}, label {items[1]['label']} failed: ")
    assert "1 NaN and 0 Inf voxels" in message and threading.active_count() == before


# ------------------------------------------------------------------------------------------------ converters


def test_prepare_la_refuses_nan_voxels_and_a_missing_source_dir(tmp_path):
    h5py = pytest.importorskip("h5py")
    from crln_monai.data.convert import prepare_la, prepare_la_from_h5

    rng = np.random.default_rng(0)
    for case in ("caseA", "caseB"):
        (tmp_path / "src" / case).mkdir(parents=True)
        image = rng.standard_normal((12, 10, 6)).astype(np.float32)
        if case == "caseB":
            image[0, 0, 0] = np.nan
        with h5py.File(tmp_path / "src" / case / "mri_norm2.h5", "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=np.zeros((12, 10, 6), np.uint8))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^prepare_la_from_h5: case 'caseB': the image holds 1 NaN and 0 Inf voxels"):
        prepare_la(tmp_path / "src", out, train_list=["caseA", "caseB"], test_list=[], num_labelled=1, progress=False)
    assert not out.exists()  # caseA was converted before caseB failed: no half data set is left
    for convert in (prepare_la, prepare_la_from_h5):
        with pytest.raises(FileNotFoundError, match=r"source_dir .*nowhere does not exist"):
            convert(tmp_path / "nowhere", out)


def test_prepare_la_script_says_the_source_dir_is_missing(tmp_path):
    spec = importlib.util.spec_from_file_location("prepare_la_script", REPO / "scripts" / "prepare_la.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(FileNotFoundError, match=rf"^source_dir {tmp_path / 'nowhere'} does not exist"):
        script.main(["--source_dir", str(tmp_path / "nowhere"), "--out_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ bundle run


@pytest.mark.slow
def test_bundle_training_with_a_truncated_file_exits_1_naming_it(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=6, num_test=0, shape=(24, 24, 16), seed=0)
    bad = data / "imagesTr" / "case_003.nii.gz"
    bad.write_bytes(bad.read_bytes()[:-200])
    files = f"['{CONFIGS / 'train.json'}']"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", files,
           "--bundle_root", str(tmp_path / "run"), "--dataset_dir", str(data), "--num_labelled", "2",
           "--patch_size", "[16,16,16]", "--sw_stride", "[8,8,8]", "--num_prototypes", "2", "--num_queries", "8",
           "--num_negatives", "16", "--max_epochs", "1", "--epoch_length", "1", "--num_workers", "2"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "terminate called" not in output
    assert f"ValueError: image (case 'case_003') {bad} is truncated or corrupt" in output
    assert not (tmp_path / "run" / "models" / "model_last.pt").exists()


def _chain(error: BaseException) -> str:
    """Every message of an exception's ``__cause__`` chain (MONAI wraps an expression's error)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return " | ".join(messages)


def test_evaluation_and_inference_check_their_cases_before_any_work(tmp_path):
    from monai.bundle import ConfigWorkflow

    data = make_synthetic_dataset(tmp_path / "data", num_cases=5, num_test=1, shape=(24, 24, 16), seed=0)
    test_image = data / "imagesTr" / "case_004.nii.gz"
    image = nib.load(test_image)
    values = np.asarray(image.dataobj).copy()
    values[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(values, image.affine), test_image)
    common = dict(meta_file=str(CONFIGS / "metadata.json"), logging_file=False, bundle_root=str(tmp_path / "run"),
                  dataset_dir=str(data), num_labelled=2, patch_size=[16, 16, 16], sw_stride=[8, 8, 8])  # fmt: skip
    evaluation = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], run_id="evaluating", **common
    )
    evaluation.initialize()
    with pytest.raises(RuntimeError) as info:
        evaluation.run()  # refused before the checkpoint is even looked for
    assert f"image (case 'case_004') {test_image}: 1 NaN and 0 Inf voxels" in _chain(info.value)
    inference = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "inference.json")], run_id="inference",
        input=str(test_image), output_dir=str(tmp_path / "predictions"), **common,
    )  # fmt: skip
    with pytest.raises(RuntimeError) as info:
        inference.initialize()
    assert f"image (case 'case_004') {test_image}: 1 NaN and 0 Inf voxels" in _chain(info.value)
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()] + list(tmp_path.glob("predictions/*"))
    assert written == []  # no report, no prediction (the output folders may exist: they are checked at start)
