"""LA converters: UA-MT h5 and challenge NRRD → NIfTI Decathlon folder (values, geometry, reruns, errors, CLI)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
nrrd = pytest.importorskip("nrrd")

from crln_monai.data import semi_supervised_datalist  # noqa: E402
from crln_monai.data.convert import (  # noqa: E402
    LA_TEST,
    LA_TRAIN,
    encode_uint8_grid,
    is_complete_nifti_gz,
    prepare_la,
    prepare_la_from_h5,
    prepare_la_from_nrrd,
    read_case_list,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------- helpers


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)


def _zscored_8bit(rng: np.random.Generator, shape=(12, 10, 6)) -> np.ndarray:
    raw = rng.integers(0, 200, size=shape).astype(np.float64)
    return ((raw - raw.mean()) / raw.std()).astype(np.float32)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def _h5_source(tmp_path: Path, cases=("caseA", "caseB", "caseC", "caseD")) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    source, arrays = tmp_path / "src", {}
    for case in cases:
        image = _zscored_8bit(rng)
        label = (rng.random((12, 10, 6)) > 0.7).astype(np.uint8)
        _write_h5(source / case / "mri_norm2.h5", image, label)
        arrays[case] = (image, label)
    return source, arrays


# ---------------------------------------------------------------------------------------- the shared real cases


def test_h5_reproduces_shared_la_cases(la_dir, tmp_path):
    sample = la_dir / "h5_sample"
    train_case, test_case = read_case_list(la_dir / "train.list")[0], read_case_list(la_dir / "test.list")[0]
    if not (sample / train_case / "mri_norm2.h5").is_file():
        pytest.skip("h5_sample of the shared LA data is absent")
    out = prepare_la_from_h5(sample, tmp_path / "out", train_list=[train_case], test_list=[test_case],
                             num_labelled=1, progress=False)
    for case in (train_case, test_case):
        ours_img = nib.load(out / "imagesTr" / f"{case}.nii.gz")
        ref_img = nib.load(la_dir / "imagesTr" / f"{case}.nii.gz")
        with h5py.File(sample / case / "mri_norm2.h5") as f:
            original = f["image"][()]
        assert ours_img.shape == ref_img.shape == original.shape
        np.testing.assert_array_equal(ours_img.affine, np.diag([0.625, 0.625, 0.625, 1.0]))
        np.testing.assert_allclose(ours_img.affine, ref_img.affine)
        header = ours_img.header
        assert int(header["qform_code"]) == int(header["sform_code"]) == 1
        assert header.get_xyzt_units()[0] == "mm"
        assert header.get_data_dtype() == np.uint8  # grid re-encoding, as the shared set
        ulp = float(np.spacing(np.float32(np.abs(original).max())))
        assert np.abs(ours_img.get_fdata() - ref_img.get_fdata()).max() <= 2 * ulp
        assert np.abs(ours_img.get_fdata() - original).max() <= 2 * ulp
        # labels: byte-identical files (same encoding, gzip mtime 0)
        ours_label = (out / "labelsTr" / f"{case}.nii.gz").read_bytes()
        assert ours_label == (la_dir / "labelsTr" / f"{case}.nii.gz").read_bytes()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["train_ids"] == [train_case] and meta["test_ids"] == [test_case]


def test_builtin_ua_mt_lists_equal_the_shared_lists(la_dir):
    assert read_case_list(la_dir / "train.list") == list(LA_TRAIN)
    assert read_case_list(la_dir / "test.list") == list(LA_TEST)
    assert len(LA_TRAIN) == 80 and len(LA_TEST) == 20


# ------------------------------------------------------------------------------------------ h5, synthetic input


def test_uint8_grid_encoding_round_trip_and_refusals():
    grid = np.float32(-0.75) + np.float32(0.0371) * np.arange(200, dtype=np.float32)
    values = grid[np.random.default_rng(1).integers(0, 200, size=(5, 6, 7))]
    codes, slope, inter = encode_uint8_grid(values)
    assert codes.dtype == np.uint8 and codes.shape == values.shape
    ulp = float(np.spacing(np.float32(np.abs(values).max())))
    assert np.abs(codes * np.float64(slope) + inter - values).max() <= 4 * ulp
    assert encode_uint8_grid(np.array([0.0, 1.0, 2.5])) is None  # not a uniform grid
    assert encode_uint8_grid(np.arange(300, dtype=np.float32)) is None  # more than 256 values
    assert encode_uint8_grid(np.array([0.0, np.nan])) is None
    codes, slope, inter = encode_uint8_grid(np.full((2, 2), 3.5))
    assert np.all(codes * slope + inter == 3.5)


def test_h5_synthetic_conversion_rerun_and_datalist(tmp_path, capsys):
    source, arrays = _h5_source(tmp_path)
    # caseD is not on a uint8 grid: stored as float32
    arrays["caseD"] = (np.random.default_rng(5).normal(size=(12, 10, 6)).astype(np.float32), arrays["caseD"][1])
    _write_h5(source / "caseD" / "mri_norm2.h5", *arrays["caseD"])
    (source / "train.list").write_text("caseA\ncaseB\ncaseC\n")
    (source / "test.list").write_text("caseD\n")
    out = tmp_path / "out"
    assert prepare_la_from_h5(source, out, num_labelled=(1, 2), progress=False) == out
    assert "4 case(s) written, 0 skipped" in capsys.readouterr().out

    for case, (image, label) in arrays.items():
        img = nib.load(out / "imagesTr" / f"{case}.nii.gz")
        assert img.get_data_dtype() == (np.float32 if case == "caseD" else np.uint8)
        np.testing.assert_allclose(img.get_fdata(), image, atol=4 * float(np.spacing(np.float32(np.abs(image).max()))))
        np.testing.assert_array_equal(np.asanyarray(nib.load(out / "labelsTr" / f"{case}.nii.gz").dataobj), label)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["train_ids"] == ["caseA", "caseB", "caseC"] and meta["test_ids"] == ["caseD"]
    assert meta["numTraining"] == 4 and meta["modality"] == {"0": "MRI"}
    assert meta["protocol"]["33.3333%"]["labelled_ids"] == ["caseA"]
    assert meta["protocol"]["66.6667%"]["labelled_ids"] == ["caseA", "caseB"]

    split = semi_supervised_datalist(out, num_labelled=1)
    assert [i["case"] for i in split["labelled"]] == ["caseA"]
    assert [i["case"] for i in split["unlabelled"]] == ["caseB", "caseC"]
    assert [i["case"] for i in split["test"]] == ["caseD"]

    # rerun: nothing changes (bytes and modification times), every case skipped
    before = _snapshot(out)
    prepare_la_from_h5(source, out, num_labelled=(1, 2), progress=False)
    assert "0 case(s) written, 4 skipped" in capsys.readouterr().out
    assert _snapshot(out) == before

    # a truncated file is redone (same bytes); the other cases keep their mtimes
    damaged = out / "imagesTr" / "caseB.nii.gz"
    damaged.write_bytes(before["imagesTr/caseB.nii.gz"][0][:100])
    assert not is_complete_nifti_gz(damaged)
    prepare_la_from_h5(source, out, num_labelled=(1, 2), progress=False)
    assert "1 case(s) written, 3 skipped" in capsys.readouterr().out
    after = _snapshot(out)
    assert after["imagesTr/caseB.nii.gz"][0] == before["imagesTr/caseB.nii.gz"][0]
    assert after["imagesTr/caseA.nii.gz"] == before["imagesTr/caseA.nii.gz"]

    # overwrite rewrites identical bytes
    prepare_la_from_h5(source, out, num_labelled=(1, 2), overwrite=True, progress=False)
    assert {k: v[0] for k, v in _snapshot(out).items()} == {k: v[0] for k, v in before.items()}


def test_h5_without_label_names_the_file_and_leaves_no_half_data_set(tmp_path):
    source, _ = _h5_source(tmp_path, cases=("caseA", "caseB", "caseC"))
    bad = source / "caseB" / "mri_norm2.h5"
    _write_h5(bad, _zscored_8bit(np.random.default_rng(3)), None)
    out = tmp_path / "out"
    kw = dict(test_list=[], num_labelled=1, progress=False)
    with pytest.raises(ValueError, match=r"caseB.*mri_norm2\.h5.*'label'"):
        prepare_la_from_h5(source, out, train_list=["caseA", "caseB"], **kw)
    assert not out.exists()  # caseA was converted before caseB failed: nothing of the run is left, no folder
    # a complete folder meets a corrupt case on a later run (a third case added): it stays exactly as it was
    _write_h5(bad, _zscored_8bit(np.random.default_rng(3)), np.zeros((12, 10, 6), np.uint8))
    prepare_la_from_h5(source, out, train_list=["caseA", "caseB"], **kw)
    (out / "notes.txt").write_text("the user's own file\n")
    written = _snapshot(out)
    _write_h5(source / "caseC" / "mri_norm2.h5", _zscored_8bit(np.random.default_rng(4)), None)
    with pytest.raises(ValueError, match=r"caseC.*mri_norm2\.h5.*'label'"):
        prepare_la_from_h5(source, out, train_list=["caseA", "caseB", "caseC"], **kw)
    assert _snapshot(out) == written and sorted(p.name for p in out.iterdir()) == sorted(
        [".crln_prepare.json", "dataset.json", "imagesTr", "labelsTr", "notes.txt"]
    )
    # fixed and rerun: the third case joins, the first two keep their files (same bytes and modification times)
    fixed = (_zscored_8bit(np.random.default_rng(4)), np.zeros((12, 10, 6), np.uint8))
    _write_h5(source / "caseC" / "mri_norm2.h5", *fixed)
    prepare_la_from_h5(source, out, train_list=["caseA", "caseB", "caseC"], **kw)
    after = _snapshot(out)
    assert after["imagesTr/caseA.nii.gz"] == written["imagesTr/caseA.nii.gz"] and "imagesTr/caseC.nii.gz" in after
    assert after["notes.txt"] == written["notes.txt"] and not list(out.glob(".prepare-*"))
    assert json.loads((out / "dataset.json").read_text())["train_ids"] == ["caseA", "caseB", "caseC"]


def test_an_interrupt_leaves_the_folder_as_it_was_and_the_next_run_clears_the_temporary(tmp_path, monkeypatch):
    from crln_monai.data.convert import output

    source, _ = _h5_source(tmp_path, cases=("caseA", "caseB"))
    out = tmp_path / "out"
    kw = dict(train_list=["caseA"], test_list=["caseB"], num_labelled=1, progress=False)
    prepare_la_from_h5(source, out, **kw)
    before = _snapshot(out)
    real = output.write_dataset_json

    def interrupted(*args, **kwargs):  # Ctrl-C after every case, before dataset.json
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "write_dataset_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_la_from_h5(source, out, overwrite=True, **kw)
    assert _snapshot(out) == before and not list(out.glob(".prepare-*"))
    monkeypatch.setattr(output, "write_dataset_json", real)
    (out / ".prepare-killed.tmp" / "imagesTr").mkdir(parents=True)  # what a SIGKILL mid-run leaves
    prepare_la_from_h5(source, out, **kw)
    assert _snapshot(out) == before and not list(out.glob(".prepare-*"))


def test_list_naming_a_missing_case_fails_before_writing(tmp_path):
    source, _ = _h5_source(tmp_path, cases=("caseA", "caseB"))
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"caseZ.*test list"):
        prepare_la_from_h5(source, out, train_list=["caseA"], test_list=["caseB", "caseZ"], num_labelled=1,
                           progress=False)
    assert not (out / "imagesTr").exists()
    with pytest.raises(ValueError, match="both the train and the test list"):
        prepare_la_from_h5(source, out, train_list=["caseA", "caseB"], test_list=["caseB"], progress=False)
    with pytest.raises(ValueError, match="num_labelled"):
        prepare_la_from_h5(source, out, train_list=["caseA"], test_list=["caseB"], num_labelled=(8, 16),
                           progress=False)


# --------------------------------------------------------------------------------------------------------- NRRD

_SPACING = (0.7, 0.7, 2.5)
_ORIGIN_LPS = np.array([10.0, -20.0, 30.0])


def _write_nrrd_case(folder: Path, raw: np.ndarray, label: np.ndarray, spacing=_SPACING, header_kind="lps") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if header_kind == "lps":
        header = {"space": "left-posterior-superior", "space directions": np.diag(spacing),
                  "space origin": _ORIGIN_LPS}
    else:
        header = {"spacings": np.asarray(spacing)}
    nrrd.write(str(folder / "lgemri.nrrd"), raw, header, index_order="F")
    nrrd.write(str(folder / "laendo.nrrd"), label, header, index_order="F")


def _nrrd_source(tmp_path: Path, shape=(12, 10, 6), box=(slice(3, 8), slice(2, 7), slice(1, 5)), **kw):
    rng = np.random.default_rng(7)
    source, arrays = tmp_path / "nrrd", {}
    for case in ("n1", "n2", "n3"):
        raw = rng.integers(0, 256, size=shape).astype(np.uint8)
        label = np.zeros(shape, np.uint8)
        label[box] = 255
        _write_nrrd_case(source / case, raw, label, **kw)
        arrays[case] = (raw, label)
    return source, arrays


def test_nrrd_full_volume_geometry_zscore_and_labels(tmp_path):
    source, arrays = _nrrd_source(tmp_path)
    out = prepare_la_from_nrrd(source, tmp_path / "out", train_list=["n1", "n2"], test_list=["n3"], num_labelled=1,
                               progress=False)
    expected_affine = np.diag([-0.7, -0.7, 2.5, 1.0])  # LPS → RAS: x, y negated
    expected_affine[:3, 3] = [-10.0, 20.0, 30.0]
    for case, (raw, label) in arrays.items():
        img = nib.load(out / "imagesTr" / f"{case}.nii.gz")
        assert img.shape == raw.shape  # full volume, no cropping
        np.testing.assert_allclose(img.affine, expected_affine, atol=1e-5)
        assert img.header.get_zooms() == pytest.approx(_SPACING)
        assert img.get_data_dtype() == np.uint8
        zscore = (raw - raw.astype(np.float64).mean()) / raw.astype(np.float64).std()
        np.testing.assert_allclose(img.get_fdata(), zscore, atol=1e-5)
        lab = nib.load(out / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(np.asanyarray(lab.dataobj), label // 255)
        np.testing.assert_allclose(lab.affine, expected_affine, atol=1e-5)
    split = semi_supervised_datalist(out, num_labelled=1)
    assert [i["case"] for i in split["labelled"]] == ["n1"] and [i["case"] for i in split["test"]] == ["n3"]


def test_nrrd_spacings_header_and_auto_dispatch(tmp_path):
    source, _ = _nrrd_source(tmp_path, header_kind="spacings", spacing=(0.7, 0.8, 2.5))
    out = prepare_la(source, tmp_path / "out", train_list=["n1", "n2"], test_list=["n3"], num_labelled=1,
                     progress=False)
    np.testing.assert_allclose(nib.load(out / "imagesTr" / "n1.nii.gz").affine, np.diag([0.7, 0.8, 2.5, 1.0]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="already cropped"):
        prepare_la(tmp_path / "nrrd", tmp_path / "o2", source_format="h5", ua_mt_crop=True)


def test_nrrd_ua_mt_crop_margins_seed_and_settings_guard(tmp_path):
    box = (slice(100, 160), slice(90, 130), slice(0, 4))  # extents 59 and 39 → widened by 26 and 36 per side
    source, arrays = _nrrd_source(tmp_path, shape=(240, 220, 4), box=box)
    kw = dict(train_list=["n1", "n2"], test_list=["n3"], num_labelled=1, progress=False)
    full = prepare_la_from_nrrd(source, tmp_path / "full", **kw)
    crops = {}
    for seed in (0, 1):
        out = prepare_la_from_nrrd(source, tmp_path / f"crop{seed}", ua_mt_crop=True, seed=seed, **kw)
        for case in arrays:
            img = nib.load(out / "imagesTr" / f"{case}.nii.gz")
            ref = nib.load(full / "imagesTr" / f"{case}.nii.gz")
            # origin shift (RAS, x and y negated) gives the crop start
            start = np.rint((img.affine[:3, 3] - ref.affine[:3, 3]) / np.diag(ref.affine)[:3]).astype(int)
            sx, sy = start[0], start[1]
            nx, ny, nz = img.shape
            assert nz == 4 and start[2] == 0  # all slices kept
            assert 100 - 19 - 26 <= sx <= 100 - 10 - 26 and 159 + 10 + 26 <= sx + nx <= 159 + 19 + 26
            assert 90 - 19 - 36 <= sy <= 90 - 10 - 36 and 129 + 10 + 36 <= sy + ny <= 129 + 19 + 36
            # z-score over the WHOLE volume, then cropped
            np.testing.assert_allclose(img.get_fdata(), ref.get_fdata()[sx : sx + nx, sy : sy + ny], atol=1e-5)
            crops[seed, case] = (sx, sy, nx, ny)
    again = prepare_la_from_nrrd(source, tmp_path / "crop0b", ua_mt_crop=True, seed=0, **kw)
    first = (tmp_path / "crop0" / "imagesTr" / "n2.nii.gz").read_bytes()
    assert (again / "imagesTr" / "n2.nii.gz").read_bytes() == first
    assert any(crops[0, c] != crops[1, c] for c in arrays)
    with pytest.raises(ValueError, match="other settings"):
        prepare_la_from_nrrd(source, tmp_path / "full", ua_mt_crop=True, **kw)
    doc = prepare_la_from_nrrd.__doc__
    assert "EVERY volume" in doc and "test volumes included" in doc and "NOT comparable" in doc


def test_nrrd_label_errors_name_case_and_file(tmp_path):
    source, arrays = _nrrd_source(tmp_path)
    raw, label = arrays["n3"]
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.7, 0.7, 2.0]),
              "space origin": _ORIGIN_LPS}
    nrrd.write(str(source / "n3" / "laendo.nrrd"), label, header, index_order="F")
    out = tmp_path / "out"
    kw = dict(train_list=["n1", "n2"], test_list=["n3"], num_labelled=1, progress=False)
    with pytest.raises(ValueError, match=r"'n3'.*laendo\.nrrd.*geometry"):
        prepare_la_from_nrrd(source, out, **kw)
    assert not out.exists()  # n1 and n2 were converted before n3 failed: no half data set is left
    _write_nrrd_case(source / "n3", raw, (label > 0).astype(np.uint8) * 7)
    with pytest.raises(ValueError, match=r"'n3'.*laendo\.nrrd.*0/255"):
        prepare_la_from_nrrd(source, out, **kw)


def test_cli_entry_point_converts_and_documents_the_oracle_crop(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_la_script", REPO / "scripts" / "prepare_la.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    source, _ = _nrrd_source(tmp_path)
    (source / "train.list").write_text("n1\nn2\n")
    (source / "test.list").write_text("n3\n")
    out = tmp_path / "out"
    script.main(["--source_dir", str(source), "--out_dir", str(out), "--num_labelled", "1", "--progress", "False"])
    printed = capsys.readouterr().out
    assert "3 case(s) written" in printed and str(out) in printed
    assert json.loads((out / "dataset.json").read_text())["train_ids"] == ["n1", "n2"]
    with pytest.raises(SystemExit):
        script.main(["--help"])
    captured = capsys.readouterr()
    help_text = " ".join((captured.out + captured.err).split())  # fire shows help on stderr
    assert "EVERY volume" in help_text and "NOT comparable to full-volume inference" in help_text


def test_case_list_files_accept_paths_comments_and_reject_duplicates(tmp_path):
    lst = tmp_path / "train.list"
    lst.write_text("# UA-MT fork style\n../data/2018LA_Seg_Training Set/caseA/mri_norm2.h5\n\n  caseB  \n")
    assert read_case_list(lst) == ["caseA", "caseB"]
    lst.write_text("caseA\ncaseA\n")
    with pytest.raises(ValueError, match="twice"):
        read_case_list(lst)
