"""Pancreas-CT converter: DICOM series + NIfTI labels → 1 mm, HU-clipped, pancreas-cropped NIfTI (and its errors)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from crln_monai.data import semi_supervised_datalist  # noqa: E402
from crln_monai.data.convert import (  # noqa: E402
    PANCREAS_CT_TEST,
    prepare_pancreas_ct,
    read_case_list,
    read_dicom_series,
)

SHARED_TEST_LIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits" / "pancreas_ct" / "test.list"
SHAPE = (12, 10, 6)  # (columns, rows, slices)
PIXEL, STEP = 0.7, 2.5
ORIGIN_LPS = np.array([-100.0, 50.0, -200.0])


# ------------------------------------------------------------------------------------------------------- helpers


def _write_series(
    folder: Path, hu: np.ndarray, z_positions=None, pixel=(PIXEL, PIXEL), orientation=(1, 0, 0, 0, 1, 0)
) -> list[Path]:
    """One file per slice; ``hu[i, j, k]`` = column i, row j of slice k; files written in reverse slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    z_positions = ORIGIN_LPS[2] + STEP * np.arange(hu.shape[2]) if z_positions is None else z_positions
    paths = []
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "CT", series_uid, k + 1
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(ORIGIN_LPS[0]), float(ORIGIN_LPS[1]), float(z_positions[k])]
        ds.PixelSpacing = [float(pixel[0]), float(pixel[1])]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hu[:, :, k].T + 1024).astype(np.int16).tobytes()  # (rows, columns)
        path = folder / f"1-{hu.shape[2] - k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ras_affine(spacing=(PIXEL, PIXEL, STEP)) -> np.ndarray:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [-ORIGIN_LPS[0], -ORIGIN_LPS[1], ORIGIN_LPS[2]]
    return affine


def _phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HU: air (-1000) for columns < 4, soft tissue (0) for 4..7, bone (1000) from 8; pancreas = a small box."""
    hu = np.zeros(SHAPE, np.int16)
    hu[:4], hu[8:] = -1000, 1000
    hu += np.random.default_rng(seed).integers(-3, 4, size=SHAPE).astype(np.int16) * (hu == 0)
    label = np.zeros(SHAPE, np.uint8)
    label[5:8, 4:7, 2:4] = 1
    return hu, label


def _source(tmp_path: Path, numbers=(1, 2, 3), label_affine=None) -> tuple[Path, dict]:
    source, arrays = tmp_path / "Pancreas-CT", {}
    for n in numbers:
        hu, label = _phantom(n)
        _write_series(source / f"PANCREAS_{n:04d}" / "study" / "series", hu)
        (source / "labels").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label, _ras_affine() if label_affine is None else label_affine),
                 source / "labels" / f"label{n:04d}.nii.gz")
        arrays[f"image{n:04d}"] = (hu, label)
    return source, arrays


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


# ---------------------------------------------------------------------------------------------------------- tests


def test_read_dicom_series_sorts_slices_and_gives_the_ras_affine(tmp_path):
    hu, _ = _phantom(0)
    _write_series(tmp_path / "s", hu)
    volume, affine = read_dicom_series(tmp_path / "s", "c")
    np.testing.assert_array_equal(volume, hu.astype(np.float32))  # rescale intercept applied, slices sorted
    np.testing.assert_allclose(affine, _ras_affine(), atol=1e-6)


def test_read_dicom_series_places_every_voxel_at_its_patient_position(tmp_path):
    """Rows along patient y, columns along x: the slice normal points to -z, so slices come in descending z."""
    hu = np.random.default_rng(2).integers(-500, 500, size=SHAPE).astype(np.int16)
    z = ORIGIN_LPS[2] + STEP * np.arange(SHAPE[2])
    _write_series(tmp_path / "s", hu, orientation=(0, 1, 0, 1, 0, 0))
    volume, affine = read_dicom_series(tmp_path / "s", "c")
    assert volume.shape == SHAPE
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    # written pixel (row j, column i) of slice k lies at IPP_k + i * 0.7 * (0, 1, 0) + j * 0.7 * (1, 0, 0) (LPS)
    lps = np.stack([ORIGIN_LPS[0] + PIXEL * j, ORIGIN_LPS[1] + PIXEL * i, z[k]], axis=-1).reshape(-1, 3)
    ras = np.concatenate([lps * [-1, -1, 1], np.ones((lps.shape[0], 1))], axis=1)
    index = np.linalg.solve(affine, ras.T)[:3].T
    np.testing.assert_allclose(index, np.rint(index), atol=1e-6)
    index = np.rint(index).astype(int)
    np.testing.assert_array_equal(volume[index[:, 0], index[:, 1], index[:, 2]], hu.reshape(-1))
    np.testing.assert_allclose(affine[:3, 2], [0.0, 0.0, -STEP], atol=1e-9)  # normal = row x column = -z


def test_conversion_resamples_clips_crops_and_splits(tmp_path, capsys):
    source, arrays = _source(tmp_path)
    out = prepare_pancreas_ct(source, tmp_path / "out", test_list=["image0002"], num_labelled=1, margin=1,
                              progress=False)
    assert "3 case(s) written, 0 skipped" in capsys.readouterr().out
    step = 1.0 / np.array([PIXEL, PIXEL, STEP])  # input voxels per 1 mm output voxel
    full = (8, 7, 13)  # floor((n - 1) * spacing) + 1 for (12, 10, 6) at (0.7, 0.7, 2.5) mm
    for case, (hu, label) in arrays.items():
        img, lab = nib.load(out / "imagesTr" / f"{case}.nii.gz"), nib.load(out / "labelsTr" / f"{case}.nii.gz")
        # nearest-neighbour label on the full 1 mm grid, then its bounding box + 1 voxel
        grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(full, step)], indexing="ij")
        label_1mm = ndimage.map_coordinates(label, grid, order=0, mode="nearest")
        nz = np.nonzero(label_1mm)
        box = tuple(slice(max(int(i.min()) - 1, 0), min(int(i.max()) + 2, n)) for i, n in zip(nz, full))
        assert img.shape == lab.shape == tuple(b.stop - b.start for b in box)
        np.testing.assert_array_equal(np.asanyarray(lab.dataobj), label_1mm[box])
        # geometry: 1 mm, directions kept, origin moved to the crop start
        expected = _ras_affine((1.0, 1.0, 1.0))
        expected[:3, 3] += expected[:3, :3] @ [b.start for b in box]
        np.testing.assert_allclose(img.affine, expected, atol=1e-4)
        np.testing.assert_allclose(lab.affine, expected, atol=1e-4)
        assert int(img.header["sform_code"]) == 1 and img.header.get_xyzt_units()[0] == "mm"
        # HU clipped to [-125, 275] before linear resampling, then z-scored over the crop
        clipped = np.clip(hu.astype(np.float64), -125, 275)
        crop_grid = np.meshgrid(*[(np.arange(b.start, b.stop)) * s for b, s in zip(box, step)], indexing="ij")
        resampled = ndimage.map_coordinates(clipped, crop_grid, order=1, mode="nearest")
        zscored = (resampled - resampled.mean()) / resampled.std()
        np.testing.assert_allclose(img.get_fdata(), zscored, atol=1e-4)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["train_ids"] == ["image0001", "image0003"] and meta["test_ids"] == ["image0002"]
    assert meta["modality"] == {"0": "CT"} and meta["labels"]["1"] == "pancreas"
    assert meta["protocol"]["50%"]["labelled_ids"] == ["image0001"]
    split = semi_supervised_datalist(out, num_labelled=1)
    assert [i["case"] for i in split["labelled"]] == ["image0001"]
    assert [i["case"] for i in split["unlabelled"]] == ["image0003"]
    assert [i["case"] for i in split["test"]] == ["image0002"]


def test_clip_is_visible_in_the_intensity_levels(tmp_path):
    """Tissue (0 HU) sits at 125/400 of the [-125, 275] range after clipping (it would sit at 1/2 of [-1000, 1000])."""
    source, _ = _source(tmp_path, numbers=(1,))
    out = prepare_pancreas_ct(source, tmp_path / "out", test_list=[], num_labelled=1, progress=False)
    image = nib.load(out / "imagesTr" / "image0001.nii.gz").get_fdata()
    assert image.shape == (8, 7, 13)  # default margin (25 mm) keeps the whole small volume
    scaled = (image - image.min()) / (image.max() - image.min())
    tissue = scaled[4, :, :]  # output column 4 mm = input column 5.7: soft tissue
    np.testing.assert_allclose(np.median(tissue), 125 / 400, atol=0.01)


def test_rerun_is_byte_identical_and_label_orientation_is_resolved(tmp_path, capsys):
    source, arrays = _source(tmp_path)
    out = tmp_path / "out"
    prepare_pancreas_ct(source, out, test_list=["image0002"], num_labelled=1, margin=1, progress=False)
    before = _snapshot(out)
    prepare_pancreas_ct(source, out, test_list=["image0002"], num_labelled=1, margin=1, progress=False)
    assert "0 case(s) written, 3 skipped" in capsys.readouterr().out
    assert _snapshot(out) == before
    # the same label stored in RAS-canonical voxel order gives the same output
    label_img = nib.load(source / "labels" / "label0001.nii.gz")
    nib.save(nib.as_closest_canonical(label_img), source / "labels" / "label0001.nii.gz")
    assert not np.allclose(nib.load(source / "labels" / "label0001.nii.gz").affine, label_img.affine)
    prepare_pancreas_ct(source, out, test_list=["image0002"], num_labelled=1, margin=1, overwrite=True,
                        progress=False)
    assert {k: v[0] for k, v in _snapshot(out).items()} == {k: v[0] for k, v in before.items()}


def test_missing_slice_names_the_case_and_leaves_no_half_data_set(tmp_path):
    source, _ = _source(tmp_path)
    series = source / "PANCREAS_0003" / "study" / "series"
    sorted(series.glob("*.dcm"))[2].unlink()  # a middle slice
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"image0003.*1 missing slice"):
        prepare_pancreas_ct(source, out, test_list=["image0002"], num_labelled=1, progress=False)
    # order: train cases ascending (0001, 0003), then test (0002): 0001 was converted before the failure, and
    # nothing of the run is left (no folder, no image0001, no dataset.json)
    assert not out.exists()


def test_inconsistent_slice_spacing_and_pixel_spacing(tmp_path):
    hu, _ = _phantom(0)
    z = ORIGIN_LPS[2] + STEP * np.arange(SHAPE[2])
    z[3:] += 1.0  # one gap of 3.5 mm among 2.5 mm steps
    _write_series(tmp_path / "a", hu, z_positions=z)
    with pytest.raises(ValueError, match=r"'caseA'.*inconsistent slice spacing"):
        read_dicom_series(tmp_path / "a", "caseA")
    paths = _write_series(tmp_path / "b", hu)
    ds = pydicom.dcmread(paths[0])
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(paths[0])
    with pytest.raises(ValueError, match=r"'caseB'.*inconsistent pixel spacing"):
        read_dicom_series(tmp_path / "b", "caseB")
    with pytest.raises(FileNotFoundError, match="'caseC'"):
        read_dicom_series(tmp_path / "empty", "caseC")
    paths[0].write_bytes(b"not a dicom file")
    with pytest.raises(ValueError, match=r"'caseD'.*1-006\.dcm.*not a readable DICOM"):
        read_dicom_series(tmp_path / "b", "caseD")


def test_label_geometry_mismatch_names_the_case(tmp_path):
    source, _ = _source(tmp_path)
    shifted = _ras_affine()
    shifted[:3, 3] += [0.0, 0.0, 5.0]
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), shifted), source / "labels" / "label0003.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"image0003.*geometry of label .*label0003\.nii\.gz"):
        prepare_pancreas_ct(source, out, test_list=[], num_labelled=1, progress=False)
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 5), np.uint8), _ras_affine()), source / "labels" / "label0003.nii.gz")
    with pytest.raises(ValueError, match=r"image0003.*geometry"):
        prepare_pancreas_ct(source, out, test_list=[], num_labelled=1, progress=False)
    assert not out.exists()


def test_split_and_input_errors(tmp_path):
    source, _ = _source(tmp_path, numbers=(1, 2))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"image0099.*PANCREAS_0099"):
        prepare_pancreas_ct(source, out, test_list=["image0099"], num_labelled=1, progress=False)
    (source / "labels" / "label0002.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"image0002.*label0002\.nii\.gz"):
        prepare_pancreas_ct(source, out, test_list=[], num_labelled=1, progress=False)
    # the default test list is the published one: these synthetic cases are not in it → clear error
    with pytest.raises(ValueError, match="test_list names case"):
        prepare_pancreas_ct(source, out, progress=False)
    assert not (out / "imagesTr").exists()


def test_builtin_test_list_equals_the_shared_list():
    if not SHARED_TEST_LIST.is_file():
        pytest.skip(f"shared split list not found at {SHARED_TEST_LIST}")
    assert read_case_list(SHARED_TEST_LIST) == list(PANCREAS_CT_TEST)
    assert len(PANCREAS_CT_TEST) == 20
