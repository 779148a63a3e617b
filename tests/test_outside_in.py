"""Outside in: the entry points a user types, run as subprocesses on unusual but valid data, judged by their results.

A trained, exported bundle is built once (a tiny synthetic set, a few iterations at a 16³ patch, in-process), then
``python -m monai.bundle run inference`` segments inputs with LPS, transposed and oblique affines, a 4-D
``(X, Y, Z, 1)`` image, a 32×32×1 slab, a single voxel, unicode and spaces in the paths and a symlink — with the
input folder as the output folder, twice — and a 2-channel nnU-Net ``imagesTs`` folder. Checked: one output per input,
each output's shape and affine equal its input's, label values in range, the predictions of the re-oriented copies
equal the reference prediction re-oriented (so their Dice against the label equals the reference's), nothing
overwritten. ``crln-plan`` and a converter meet a fake ``.gz`` and a corrupt case: one line, exit status 2 / 1, and
the folders exactly as they were.
"""

from __future__ import annotations

import gzip
import re
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from bad_inputs import TINY, script_module
from crln_monai.overrides import run_command
from crln_monai.data import check_cases, make_synthetic_dataset
from crln_monai.plan import plan_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
SHAPE = (16, 16, 16)
TRAINING = {**TINY, "epoch_length": 4, "deterministic": True, "device": "$torch.device('cpu')"}
"""The bad-input suite's tiny run (16³ patches, a VNet of 4 base filters), 4 iterations, deterministic."""


def _train_and_export(root: Path, **overrides) -> Path:
    """Train ``bundles/la`` on ``root/data`` in-process (as ``monai.bundle run training``); returns the export."""
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        run_id="training", bundle_root=str(root / "run"), dataset_dir=str(root / "data"), **{**TRAINING, **overrides},
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    (export,) = (root / "run" / "export").iterdir()
    return export


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """A 1-channel model exported as a bundle, and its data set (case_005 is the test case)."""
    root = tmp_path_factory.mktemp("toy")
    make_synthetic_dataset(root / "data", num_cases=6, num_test=1, shape=SHAPE)
    return _train_and_export(root), root / "data"


@pytest.fixture(scope="session")
def toy_bundle_2ch(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-channel model trained on an nnU-Net folder (``imagesTs`` holds ``<case>_0000``, ``<case>_0001``)."""
    root = tmp_path_factory.mktemp("toy2")
    make_synthetic_dataset(root / "data", num_cases=5, num_test=2, shape=SHAPE, num_channels=2, layout="nnunet")
    return _train_and_export(root, in_channels=2, num_labelled=1, epoch_length=1), root / "data"  # geometry only


def _infer(bundle: Path, inputs: Path | list[Path], output_dir: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run inference`` with the exported bundle alone, as its model card says."""
    source = [str(p) for p in inputs] if isinstance(inputs, list) else str(inputs)
    command = run_command(
        "inference", [bundle / "configs" / "inference.json"], {"input": source, "output_dir": str(output_dir)},
        bundle_root=str(bundle),
    )  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, str]]:
    """Every entry under ``folder``: bytes (files), modification time, and the target of a symlink."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = (b"", 0, os.readlink(path))
        elif path.is_file():
            found[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns, "")
    return found


def _refused(result: subprocess.CompletedProcess, status: int, pattern: str) -> str:
    """The one output line matching ``pattern`` of a run that ended with ``status`` (and no C++ abort)."""
    output = result.stdout + result.stderr
    assert result.returncode == status, f"exit status {result.returncode}\n{output[-3000:]}"
    assert "terminate called" not in output
    lines = [line for line in output.splitlines() if re.search(pattern, line)]
    assert lines, f"no line matches {pattern!r}:\n{output[-3000:]}"
    return lines[0]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


# ------------------------------------------------------------------------------------------------------ inference


def _variants(image: nib.Nifti1Image) -> dict[str, tuple[np.ndarray, np.ndarray, object]]:
    """Name → (array, affine, map from the reference prediction to this file's voxel order) of the same scan stored
    differently; maps are ``None`` where the prediction is not the reference's (other content or shape)."""
    data, affine = np.asarray(image.dataobj, dtype=np.float32), image.affine
    n0, n1, _ = data.shape
    flip = np.array([[-1, 0, 0, n0 - 1], [0, -1, 0, n1 - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    permute = np.zeros((4, 4))
    permute[[2, 0, 1], [0, 1, 2]] = 1.0  # new axis 0 = old axis 2, new 1 = old 0, new 2 = old 1
    permute[3, 3] = 1.0
    angle = np.deg2rad(12.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rng = np.random.default_rng(3)
    return {
        "ras": (data, affine, lambda p: p),
        "lps": (data[::-1, ::-1, :].copy(), affine @ flip, lambda p: p[::-1, ::-1, :]),
        "transposed": (data.transpose(2, 0, 1).copy(), affine @ permute, lambda p: p.transpose(2, 0, 1)),
        "oblique": (data, rotation @ affine, lambda p: p),
        "four_d": (data[..., None], affine, lambda p: p),
        "flat": (rng.normal(size=(32, 32, 1)).astype(np.float32), np.diag([0.7, 0.7, 3.0, 1.0]), None),
        "one_voxel": (np.ones((1, 1, 1), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), None),
    }


@pytest.mark.slow
def test_inference_on_unusual_inputs_in_their_own_folder_twice(toy_bundle, tmp_path):
    bundle, data = toy_bundle
    image = nib.load(data / "imagesTr" / "case_005.nii.gz")
    label = np.asarray(nib.load(data / "labelsTr" / "case_005.nii.gz").dataobj)
    folder = tmp_path / "scans äöü ✓ (copy)"  # unicode and spaces in the path
    folder.mkdir()
    variants = _variants(image)
    for name, (array, affine, _) in variants.items():
        nib.save(nib.Nifti1Image(array, affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(variants["ras"][0], variants["ras"][1]), folder / "naïve scan.nii")  # plain .nii
    (folder / "linked.nii.gz").symlink_to("ras.nii.gz")  # a symlinked input
    inputs = _snapshot(folder)
    names = sorted(p.name for p in folder.iterdir())

    first = _infer(bundle, folder, folder)  # the output folder is the input folder
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    outputs = {p.name for p in folder.iterdir()} - set(names)
    expected = {n[: -len(".nii.gz")] if n.endswith(".gz") else n[: -len(".nii")] for n in names}
    assert outputs == {f"{case}_seg.nii.gz" for case in expected}  # one output per input
    after_first = _snapshot(folder)
    assert {k: v for k, v in after_first.items() if k in inputs} == inputs  # no input touched

    reference = np.asarray(nib.load(folder / "ras_seg.nii.gz").dataobj)
    for case in expected:
        source = nib.load(folder / (case + (".nii" if case == "naïve scan" else ".nii.gz")))
        seg = nib.load(folder / f"{case}_seg.nii.gz")
        assert seg.shape == source.shape[:3], case  # singleton axes kept, a 4-D (X,Y,Z,1) input gives (X,Y,Z)
        np.testing.assert_allclose(seg.affine, source.affine, atol=1e-5, err_msg=case)
        values = np.asarray(seg.dataobj)
        assert seg.get_data_dtype() == np.uint8 and set(np.unique(values)) <= {0, 1}, case
        orient = variants.get(case, (None, None, lambda p: p))[2]  # the symlink and the .nii copy are the scan itself
        if orient is not None:  # the same scan: the reference prediction, re-oriented like the file
            np.testing.assert_array_equal(values, orient(reference), err_msg=case)
            assert _dice(values, orient(label)) == pytest.approx(_dice(reference, label)), case
    assert not np.array_equal(reference, reference[::-1, ::-1, :])  # so the LPS comparison can fail
    assert 0.0 < reference.mean() < 1.0 and _dice(reference, label) > 0.0  # a toy model, but not a constant one

    second = _infer(bundle, folder, folder)  # again: its own outputs are not inputs (no *_seg_seg), nothing else moves
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    after_second = _snapshot(folder)
    assert set(after_second) == set(after_first)
    assert {k: v for k, v in after_second.items() if k in inputs} == inputs
    assert all(after_second[k][0] == after_first[k][0] for k in after_first)  # the same predictions, rewritten


@pytest.mark.slow
def test_inputs_named_alike_get_one_output_each_and_a_shared_file_name_is_refused(toy_bundle, tmp_path):
    bundle, data = toy_bundle
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(data / "imagesTr" / "case_005.nii.gz", folder / "a.nii.gz")
    (folder / "a.nii").write_bytes(gzip.decompress((folder / "a.nii.gz").read_bytes()))  # the same scan, unpacked
    result = _infer(bundle, folder, tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_nii_gz_seg.nii.gz", "a_nii_seg.nii.gz"]
    gz, plain = (np.asarray(nib.load(tmp_path / "out" / f"a_{e}_seg.nii.gz").dataobj) for e in ("nii_gz", "nii"))
    assert np.array_equal(gz, plain)  # the same scan twice: the same prediction under two names

    other = tmp_path / "in_again"  # a.nii.gz in two folders: one file name, one output; refused before any work
    other.mkdir()
    shutil.copy(folder / "a.nii.gz", other / "a.nii.gz")
    before = _snapshot(tmp_path)
    result = _infer(bundle, [folder / "a.nii.gz", other / "a.nii.gz"], tmp_path / "out2")
    line = _refused(result, 1, r"inputs .*in/a\.nii\.gz and .*in_again/a\.nii\.gz are both case 'a'")
    assert str(tmp_path / "out2" / "a_seg.nii.gz") in line
    assert _snapshot(tmp_path) == before and not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_an_nnunet_test_folder_of_a_two_channel_model_is_one_case_per_case(toy_bundle_2ch, tmp_path):
    bundle, data = toy_bundle_2ch
    images = data / "imagesTs"
    files = sorted(p.name for p in images.iterdir())
    cases = sorted({name[: -len("_0000.nii.gz")] for name in files})
    assert len(files) == 2 * len(cases) == 4
    result = _infer(bundle, images, tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{c}_seg.nii.gz" for c in cases]
    for case in cases:
        source, seg = nib.load(images / f"{case}_0000.nii.gz"), nib.load(tmp_path / "out" / f"{case}_seg.nii.gz")
        assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


# ------------------------------------------------------------------------------------------------- plan, converter


def _unusual_dataset(root: Path) -> Path:
    """4 labelled + 2 image-only cases stored with LPS, transposed, oblique affines and as (X, Y, Z, 1) files."""
    source = root / "source"
    make_synthetic_dataset(source, num_cases=6, num_test=0, shape=SHAPE)
    folder = root / "my data — ünïcode"
    training = []
    for i in range(6):
        case = f"case_{i:03d}"
        image = nib.load(source / "imagesTr" / f"{case}.nii.gz")
        label = np.asarray(nib.load(source / "labelsTr" / f"{case}.nii.gz").dataobj)
        kind = ["ras", "lps", "transposed", "oblique", "four_d", "lps"][i]
        array, affine, orient = _variants(image)[kind]
        (folder / "images").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), folder / "images" / f"{case} {kind}.nii.gz")
        entry = {"image": f"images/{case} {kind}.nii.gz"}
        if i < 4:
            (folder / "labels").mkdir(exist_ok=True)
            labels = folder / "labels" / f"{case} {kind}.nii.gz"
            nib.save(nib.Nifti1Image(orient(label).astype(np.uint8), affine), labels)
            entry["label"] = f"labels/{case} {kind}.nii.gz"
        training.append(entry)
    meta = {"name": "odd", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "blob"}, "training": training}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_the_plan_reads_lps_transposed_oblique_and_4d_cases_in_a_unicode_folder(tmp_path):
    folder = _unusual_dataset(tmp_path)
    plan = plan_dataset(folder, num_labelled=2, device="cpu", memory_gib=4.0, iterations=100, num_workers=1)
    out = plan.overrides
    assert (out["in_channels"], out["num_classes"], out["class_names"]) == (1, 2, ["background", "blob"])
    assert out["dataset_dir"] == str(folder) and out["target_spacing"] is None  # every case is 0.625 mm isotropic


@pytest.mark.slow
def test_the_plan_command_refuses_a_fake_gz_in_one_line(tmp_path):
    folder = _unusual_dataset(tmp_path)
    fake = folder / "images" / "case_005 lps.nii.gz"  # an image-only case: the plan reads no statistics from it
    fake.write_bytes(gzip.decompress(fake.read_bytes()))
    before = _snapshot(tmp_path)
    command = [sys.executable, "-m", "crln_monai.plan", str(folder), "--output", str(tmp_path / "plan.json"),
               "--num_labelled", "2", "--device", "cpu", "--memory_gib", "4"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    line = _refused(result, 2, r"^crln-plan: image \(case 'case_005 lps'\) .* cannot be read")
    assert str(fake) in line and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_converter_meeting_a_corrupt_case_leaves_the_prepared_folder_as_it_was(tmp_path):
    from bad_inputs import _nan_h5, _write_h5_case

    source, out = tmp_path / "src", tmp_path / "out"
    for case in ("caseA", "caseB", "caseC"):
        _write_h5_case(source / case)
    (source / "train.list").write_text("caseA\ncaseB\n")
    (source / "test.list").write_text("caseC\n")
    argv = ["--source_dir", str(source), "--out_dir", str(out), "--num_labelled", "1", "--progress", "False"]
    script_module("prepare_la").main(argv)
    (out / "README.txt").write_text("the user's notes\n")
    (source / "train.list").write_text("caseA\ncaseB\ncaseD\n")  # a case added later, corrupt
    _write_h5_case(source / "caseD", image=_nan_h5(np.nan))
    before = _snapshot(out)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_la.py"), *argv],
                            capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    _refused(result, 1, r"prepare_la_from_h5: case 'caseD': the image holds 1 NaN and 0 Inf voxels")
    assert _snapshot(out) == before and not list(out.glob(".prepare-*"))  # no half data set, nothing lost
    assert json.loads((out / "dataset.json").read_text())["train_ids"] == ["caseA", "caseB"]


# --------------------------------------------------------------------------------------------------- training


def test_a_declared_class_no_label_holds_is_warned_by_the_training_check(tmp_path, caplog):
    """A plan edited to 3 classes on 2-class labels: training's data check names the class no label holds."""
    data = make_synthetic_dataset(tmp_path / "data", num_cases=3, num_test=0, shape=SHAPE)
    items = [{"image": str(p), "label": str(data / "labelsTr" / p.name), "case": p.name[:8]}
             for p in sorted((data / "imagesTr").iterdir())]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="crln_monai.data.checks"):
        check_cases(items, 1, 3, class_names=["background", "foreground", "c2"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "class(es) 2 ('c2') of num_classes=3 are held by none of the 3 label" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crln_monai.data.checks"):
        check_cases(items, 1, 2)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
