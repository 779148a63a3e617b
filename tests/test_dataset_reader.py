"""The one reader of a data set (crln_monai.data.dataset): the record of both layouts, and the datalist, the plan, the
export name, the exporter and the pre-flight check agreeing with it, on tiny NIfTI folders made here with nibabel."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from torch import nn

from crln_monai.workflow import BundleExporter
from crln_monai.data import check_cases, export_name, semi_supervised_datalist
from crln_monai.data import dataset as dataset_module
from crln_monai.data.dataset import DataSet, read_case_header, read_dataset
from crln_monai.plan import PlanError, plan_dataset

SHAPE = (12, 10, 8)
ODD_NAME = "ACDC: cine-MRI / 2017"


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 4.0, 1.0]) if affine is None else affine), str(path))
    return str(path)


def _image(seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = SHAPE if channels == 1 else (*SHAPE, channels)
    return rng.normal(100, 10, shape).astype(np.float32)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[3:8, 3:7, 2:6] = 1
    return label


def _decathlon(root: Path, labels: dict) -> Path:
    """Three labelled cases, one image-only training entry, one top-level unlabelled and one test case."""
    training = []
    for i in range(3):
        _save(root / "imagesTr" / f"heart_{i}.nii.gz", _image(i))
        _save(root / "labelsTr" / f"heart_{i}.nii.gz", _label())
        training.append({"image": f"./imagesTr/heart_{i}.nii.gz", "label": f"./labelsTr/heart_{i}.nii.gz"})
    _save(root / "imagesTr" / "heart_3.nii.gz", _image(3))
    training.append({"image": "./imagesTr/heart_3.nii.gz"})
    _save(root / "extra" / "cine_0.nii.gz", _image(4))
    _save(root / "imagesTs" / "heart_9.nii.gz", _image(9))
    meta = {"name": ODD_NAME, "labels": labels, "modality": {"0": "cine-MRI"}, "description": "tiny hearts",
            "training": training, "unlabelled": ["./extra/cine_0.nii.gz"], "test": ["./imagesTs/heart_9.nii.gz"]}
    (root / "mine.json").write_text(json.dumps(meta))
    return root


def _nnunet(root: Path) -> Path:
    """Two-channel nnU-Net folder without json: cases a, b labelled, c image-only, t a test case."""
    for case in ("a", "b", "c", "t"):
        folder = "imagesTs" if case == "t" else "imagesTr"
        for channel in range(2):
            _save(root / folder / f"{case}_{channel:04d}.nii.gz", _image(ord(case) + channel))
    for case in ("a", "b"):
        _save(root / "labelsTr" / f"{case}.nii.gz", _label())
    return root


def _ids(cases) -> list[str]:
    return [c.case if hasattr(c, "case") else c["case"] for c in cases]


# ------------------------------------------------------------------------------------------------- the record


@pytest.mark.parametrize("labels", [{"0": "background", "1": "LV"}, {"background": 0, "LV": 1}],
                         ids=["index_to_name", "name_to_index"])  # fmt: skip
def test_decathlon_record(tmp_path, labels):
    root = _decathlon(tmp_path / "hearts", labels)
    data = read_dataset(root, "mine.json")
    assert isinstance(data, DataSet) and data.layout == "decathlon"
    assert data.root == root and data.path == root / "mine.json"
    assert data.name == ODD_NAME and data.raw["description"] == "tiny hearts"
    assert data.class_names == ["background", "LV"]  # either form of 'labels'
    assert data.modalities == ["cine-MRI"]
    assert _ids(data.train) == ["heart_0", "heart_1", "heart_2", "heart_3", "cine_0"]
    assert [c.label is not None for c in data.train] == [True, True, True, False, False]
    assert data.train[0].image == str(root / "imagesTr" / "heart_0.nii.gz")
    assert data.validation == () and _ids(data.test) == ["heart_9"]
    json_only = read_dataset(root, "mine.json", cases=False)  # the json alone: no case listed
    assert (json_only.name, json_only.layout, json_only.train, json_only.raw) == (ODD_NAME, None, (), data.raw)


def test_nnunet_record_with_and_without_json(tmp_path):
    root = _nnunet(tmp_path / "brains")
    data = read_dataset(root)
    assert data.layout == "nnunet" and data.path is None and data.raw == {}
    assert data.name == "brains" and data.class_names is None and data.modalities is None
    assert _ids(data.train) == ["a", "b", "c"] and _ids(data.test) == ["t"]
    assert data.train[0].image == (str(root / "imagesTr" / "a_0000.nii.gz"), str(root / "imagesTr" / "a_0001.nii.gz"))
    assert [c.label is not None for c in data.train] == [True, True, False]

    meta = {"name": "Brains 2", "labels": {"0": "background", "1": "tumour"}, "channel_names": {"0": "T1", "1": "T2"},
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    data = read_dataset(root)
    assert data.layout == "nnunet" and data.path == root / "dataset.json" and data.name == "Brains 2"
    assert data.class_names == ["background", "tumour"] and data.modalities == ["T1", "T2"]
    assert _ids(data.train) == ["a", "b", "c"]

    (root / "imagesTr" / "c_0001.nii.gz").unlink()  # the json's two channel names: c's missing channel is named
    with pytest.raises(ValueError, match=r"case 'c' has channel files \[0\]; expected channels 0\.\.1"):
        read_dataset(root)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"mine\.json holds a list; expected a dataset description object"),
    ("{oops", r"mine\.json is not valid JSON"),
])  # fmt: skip
def test_a_json_that_is_no_object_is_refused_by_every_reader_alike(tmp_path, text, message):
    root = _decathlon(tmp_path / "hearts", {"0": "background", "1": "LV"})
    (root / "mine.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_dataset(root, "mine.json")
    with pytest.raises(ValueError, match=message):
        semi_supervised_datalist(root, datalist_file="mine.json")
    with pytest.raises(PlanError, match=message):
        plan_dataset(root, datalist_file="mine.json", device="cpu", memory_gib=4.0)
    assert export_name(root, "mine.json") == "hearts"  # an unreadable json: the folder's name


def test_malformed_labels_stop_the_plan_but_not_the_datalist(tmp_path):
    """nnU-Net's region lists in 'labels' mean nothing to the plan (refused in one line, before any file is read),
    while a training run that names its classes itself still gets its datalist."""
    regions = {"background": 0, "heart": [1, 2]}
    root = _decathlon(tmp_path / "hearts", regions)
    data = read_dataset(root, "mine.json")
    with pytest.raises(ValueError, match=r"'labels' must be .*region lists are not supported"):
        data.class_names  # noqa: B018
    assert _ids(semi_supervised_datalist(data, num_labelled=1)["labelled"]) == ["heart_0"]
    with pytest.raises(PlanError, match=r"mine\.json 'labels' must be .*region lists are not supported"):
        plan_dataset(root, datalist_file="mine.json", device="cpu", memory_gib=4.0)
    (root / "mine.json").write_text(json.dumps({**data.raw, "labels": {"0": "background", "2": "LV"}}))
    with pytest.raises(PlanError, match=r"'labels' indices are \[0, 2\]; expected 0\.\.1 without gaps"):
        plan_dataset(root, datalist_file="mine.json", device="cpu", memory_gib=4.0)


# ------------------------------------------------------------------------------------------ the readers agree


def test_datalist_export_name_and_exporter_agree_with_the_record(tmp_path):
    root = _decathlon(tmp_path / "hearts", {"background": 0, "LV": 1})
    data = read_dataset(root, "mine.json")
    from_folder = semi_supervised_datalist(root, num_labelled=2, datalist_file="mine.json")
    assert from_folder == semi_supervised_datalist(data, num_labelled=2)
    assert from_folder["labelled"] + from_folder["unlabelled"] == [c.as_item() for c in data.train]
    assert from_folder["test"] == [c.as_item() for c in data.test]
    assert export_name(root, "mine.json") == "ACDC_cine-MRI_2017"  # the record's name, file-safe
    exporter = BundleExporter(tmp_path / "export", nn.Identity(), {}, {}, root, datalist_file="mine.json")
    assert exporter.name == "ACDC_cine-MRI_2017" and exporter.path == tmp_path / "export" / "ACDC_cine-MRI_2017"
    assert exporter.dataset == {k: v for k, v in data.raw.items() if k not in ("training", "unlabelled", "test")}
    missing = BundleExporter(tmp_path / "export", nn.Identity(), {}, {}, tmp_path / "nowhere")
    assert missing.name == "nowhere" and missing.dataset == {}


@pytest.mark.parametrize("layout", ["decathlon", "nnunet"])
def test_the_plan_reads_the_json_once_and_agrees_with_the_record(tmp_path, monkeypatch, layout):
    if layout == "decathlon":
        root, datalist_file = _decathlon(tmp_path / "hearts", {"0": "background", "1": "LV"}), "mine.json"
    else:
        root, datalist_file = _nnunet(tmp_path / "brains"), "dataset.json"
        (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1},
                                                       "channel_names": {"0": "T1", "1": "T2"}}))
    data = read_dataset(root, datalist_file)
    reads = []
    real = dataset_module.read_json
    monkeypatch.setattr(dataset_module, "read_json", lambda path: reads.append(path) or real(path))
    plan = plan_dataset(root, datalist_file=datalist_file, num_labelled=1, device="cpu", memory_gib=4.0,
                        num_workers=1, iterations=600)
    assert reads == [root / datalist_file]  # one read of the json for the whole plan
    out = plan.overrides
    assert out["class_names"] == data.class_names and out["in_channels"] == len(data.modalities)
    assert plan.summary[0].startswith(f"{data.name}: {len(data.train) + len(data.test)} cases")
    labelled = [c for c in data.train if c.label is not None]
    assert out["num_labelled"] + out["num_validation"] <= len(labelled)


# ---------------------------------------------------------------------------------------------------- headers


def test_case_header_is_read_in_ras_order_and_refused_as_the_check_refuses(tmp_path):
    # file axes (x, y, z) point (S, R, A): RAS axis 0 comes from file axis 1, 1 from 2, 2 from 0
    affine = np.array([[0, 2.0, 0, 0], [0, 0, 3.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    image = _save(tmp_path / "x.nii.gz", np.zeros((5, 6, 7, 2), np.float32), affine)
    header = read_case_header({"image": image, "case": "x"}, "test")
    assert header.ras_axes == (1, 2, 0) and header.shape == (6, 7, 5)
    assert header.spacing == (2.0, 3.0, 1.0) and header.channels == 2
    assert check_cases([image], in_channels=2) == [image]  # the check reads the same header and agrees

    flat = _save(tmp_path / "flat.nii.gz", np.zeros((8, 7), np.float32))
    expected = f"image (case 'f') {flat} is 2-D (shape (8, 7)); expected a 3-D volume (H, W, D)"
    with pytest.raises(ValueError) as from_header:
        read_case_header({"image": flat, "case": "f"}, "test")
    with pytest.raises(ValueError) as from_check:
        check_cases([{"image": flat, "case": "f"}], in_channels=1)
    assert str(from_header.value).startswith(expected) and str(from_check.value) == str(from_header.value)

    files = [_save(tmp_path / "c0.nii.gz", np.zeros(SHAPE, np.float32)),
             _save(tmp_path / "c1.nii.gz", np.zeros(SHAPE, np.float32), np.diag([1.5, 1.5, 4.1, 1.0]))]  # fmt: skip
    with pytest.raises(ValueError, match=r"on another grid than .*c0\.nii\.gz"):
        read_case_header({"image": files, "case": "g"}, "test")
    with pytest.raises(ValueError, match=r"c1\.nii\.gz and first channel file .*c0\.nii\.gz have different affines"):
        check_cases([{"image": files, "case": "g"}], in_channels=2)
