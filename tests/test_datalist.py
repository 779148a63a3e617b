"""Tests of crln_monai.data.datalist: layouts, the labelled/unlabelled/validation/test protocol, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from crln_monai.data.datalist import (
    DATALIST_KEYS,
    case_id_from_filename,
    load_datalist_json,
    save_datalist_json,
    semi_supervised_datalist,
    without_labels,
)
from crln_monai.data.synthetic import make_synthetic_dataset

SMALL = dict(shape=(16, 16, 8), num_cases=10, num_test=2)  # 8 train cases: case_000..case_007


def ids(items: list[dict]) -> list[str]:
    return [i["case"] for i in items]


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def write_decathlon(root: Path, meta: dict, files: list[str]) -> Path:
    for f in files:
        touch(root / f)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "data", **SMALL)


@pytest.fixture(scope="module")
def truly_unlabelled_dir(tmp_path_factory) -> Path:
    # only the first ceil(25 % of 8) = 2 train cases have label files
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "data", with_unlabelled_labels=False, **SMALL)


# ------------------------------------------------------------------------------------------------- Decathlon


def test_decathlon_first_n_labelled(synthetic_dir):
    d = semi_supervised_datalist(synthetic_dir, num_labelled=2)
    assert tuple(d) == DATALIST_KEYS
    assert ids(d["labelled"]) == ["case_000", "case_001"]
    assert ids(d["unlabelled"]) == [f"case_00{i}" for i in range(2, 8)]
    assert ids(d["test"]) == ["case_008", "case_009"]
    assert d["validation"] == []
    item = d["labelled"][0]
    assert set(item) == {"image", "label", "case"}
    assert os.path.isabs(item["image"]) and os.path.isfile(item["image"])
    assert item["label"] == str(synthetic_dir.resolve() / "labelsTr" / "case_000.nii.gz")
    assert all("label" in i for i in d["unlabelled"])  # label files exist for these cases; they are kept


def test_decathlon_validation_carved_from_end(synthetic_dir):
    d = semi_supervised_datalist(synthetic_dir, num_labelled=2, num_validation=2)
    assert ids(d["validation"]) == ["case_006", "case_007"]
    assert ids(d["unlabelled"]) == ["case_002", "case_003", "case_004", "case_005"]
    assert not set(ids(d["validation"])) & set(ids(d["test"]))


def test_decathlon_explicit_ids(synthetic_dir):
    d = semi_supervised_datalist(synthetic_dir, labelled=["case_005", "case_001"], unlabelled=["case_002"])
    assert ids(d["labelled"]) == ["case_005", "case_001"]
    assert ids(d["unlabelled"]) == ["case_002"]


def test_default_labelled_is_every_case_with_labels(truly_unlabelled_dir):
    d = semi_supervised_datalist(truly_unlabelled_dir)
    assert ids(d["labelled"]) == ["case_000", "case_001"]
    assert ids(d["unlabelled"]) == [f"case_00{i}" for i in range(2, 8)]
    assert all("label" not in i for i in d["unlabelled"])
    assert all("label" in i for i in d["test"])


def test_validation_takes_last_cases_with_labels(truly_unlabelled_dir):
    d = semi_supervised_datalist(truly_unlabelled_dir, num_labelled=1, num_validation=1)
    assert ids(d["validation"]) == ["case_001"]  # the last train case that has a label file
    assert ids(d["labelled"]) == ["case_000"]
    assert "case_001" not in ids(d["unlabelled"]) and len(d["unlabelled"]) == 6


def test_decathlon_without_ids_and_image_only_lists(tmp_path):
    meta = {
        "training": [
            {"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
            {"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"},
            {"image": "./imagesTr/c.nii.gz"},  # no label: image-only
        ],
        "unlabelled": ["./imagesUn/u1.nii.gz", {"image": "./imagesUn/u2.nii.gz"}],
        "test": ["./imagesTs/t.nii.gz"],
    }
    files = [f"imagesTr/{c}.nii.gz" for c in "abc"] + [f"labelsTr/{c}.nii.gz" for c in "ab"]
    files += ["imagesUn/u1.nii.gz", "imagesUn/u2.nii.gz", "imagesTs/t.nii.gz"]
    root = write_decathlon(tmp_path, meta, files)
    d = semi_supervised_datalist(root, num_labelled=1)
    assert ids(d["labelled"]) == ["a"]
    assert ids(d["unlabelled"]) == ["b", "c", "u1", "u2"]
    assert [("label" in i) for i in d["unlabelled"]] == [True, False, False, False]
    assert ids(d["test"]) == ["t"] and "label" not in d["test"][0]


def test_test_ids_without_train_ids_are_removed_from_train(tmp_path):
    meta = {"training": [{"image": f"./i/{c}.nii.gz", "label": f"./l/{c}.nii.gz"} for c in "abcd"], "test_ids": ["b"]}
    root = write_decathlon(tmp_path, meta, [f"i/{c}.nii.gz" for c in "abcd"] + [f"l/{c}.nii.gz" for c in "abcd"])
    d = semi_supervised_datalist(root, num_labelled=1)
    assert ids(d["labelled"]) == ["a"] and ids(d["unlabelled"]) == ["c", "d"] and ids(d["test"]) == ["b"]


def _with_val_ids(root: Path, val_ids: list[str], extra: dict | None = None) -> Path:
    """A 6-case Decathlon folder: train_ids a..d, the given val_ids, test_ids f (+ ``extra`` keys)."""
    cases = "abcdef"
    meta = {
        "training": [{"image": f"./i/{c}.nii.gz", "label": f"./l/{c}.nii.gz"} for c in cases],
        "train_ids": list("abcd"),
        "val_ids": val_ids,
        "test_ids": ["f"],
        **(extra or {}),
    }
    return write_decathlon(root, meta, [f"i/{c}.nii.gz" for c in cases] + [f"l/{c}.nii.gz" for c in cases])


def test_val_ids_are_the_validation_list(tmp_path):
    root = _with_val_ids(tmp_path, ["e"])
    d = semi_supervised_datalist(root, num_labelled=1)
    assert ids(d["labelled"]) == ["a"] and ids(d["unlabelled"]) == ["b", "c", "d"]
    assert ids(d["validation"]) == ["e"] and d["validation"][0]["label"].endswith("l/e.nii.gz")
    assert ids(d["test"]) == ["f"]
    ignored = semi_supervised_datalist(root, num_labelled=1, use_val_ids=False)  # e is then in no list at all
    assert ids(ignored["validation"]) == [] and ids(ignored["unlabelled"]) == ["b", "c", "d"]
    carved = semi_supervised_datalist(root, num_labelled=1, num_validation=1, use_val_ids=False)
    assert ids(carved["validation"]) == ["d"]
    with pytest.raises(ValueError, match="already names 1 validation cases in 'val_ids'"):
        semi_supervised_datalist(root, num_labelled=1, num_validation=1)
    with pytest.raises(TypeError, match="use_val_ids must be True or False"):
        semi_supervised_datalist(root, num_labelled=1, use_val_ids="false")


def test_val_ids_without_train_ids_leave_the_train_list(tmp_path):
    meta = {"training": [{"image": f"./i/{c}.nii.gz", "label": f"./l/{c}.nii.gz"} for c in "abcd"], "val_ids": ["b"]}
    root = write_decathlon(tmp_path, meta, [f"i/{c}.nii.gz" for c in "abcd"] + [f"l/{c}.nii.gz" for c in "abcd"])
    d = semi_supervised_datalist(root, num_labelled=1)
    assert ids(d["labelled"]) == ["a"] and ids(d["unlabelled"]) == ["c", "d"] and ids(d["validation"]) == ["b"]


@pytest.mark.parametrize(
    "val_ids, message",
    [
        (["d"], r"case id\(s\) in both 'train_ids' and 'val_ids': \['d'\]"),
        (["f"], r"case id\(s\) in both 'val_ids' and 'test_ids': \['f'\]"),
        (["zz"], r"'val_ids' names 1 case id\(s\) that are not in"),
    ],
)
def test_error_bad_val_ids(tmp_path, val_ids, message):
    with pytest.raises(ValueError, match=message):
        semi_supervised_datalist(_with_val_ids(tmp_path, val_ids), num_labelled=1)


def test_error_val_ids_case_without_label(tmp_path):
    root = _with_val_ids(tmp_path, ["e"])
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][4].pop("label")
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'val_ids' names case\(s\) without a label file: \['e'\]"):
        semi_supervised_datalist(root, num_labelled=1)


# ---------------------------------------------------------------------------------------------------- nnU-Net


def test_nnunet_two_channels_truly_unlabelled(tmp_path):
    root = make_synthetic_dataset(
        tmp_path / "nn", layout="nnunet", num_channels=2, with_unlabelled_labels=False, **SMALL
    )
    assert not (root / "labelsTr" / "case_002.nii.gz").exists()
    for layout in ("auto", "nnunet"):
        d = semi_supervised_datalist(root, layout=layout)
        assert ids(d["labelled"]) == ["case_000", "case_001"]
        assert ids(d["unlabelled"]) == [f"case_00{i}" for i in range(2, 8)]
        assert all("label" not in i for i in d["unlabelled"])
        assert ids(d["test"]) == ["case_008", "case_009"]
        image = d["labelled"][0]["image"]
        assert isinstance(image, list)
        assert [Path(p).name for p in image] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
        assert d["test"][0]["label"].endswith("labelsTs/case_008.nii.gz")


def test_nnunet_without_dataset_json_and_file_ending(tmp_path):
    for c in ("x1", "x2", "x3"):
        touch(tmp_path / "imagesTr" / f"{c}_0000.nrrd")
    touch(tmp_path / "labelsTr" / "x1.nrrd")
    with pytest.raises(ValueError, match=r"does not end with the file ending '\.nii\.gz'"):
        semi_supervised_datalist(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"file_ending": ".nrrd", "channel_names": {"0": "CT"}}))
    d = semi_supervised_datalist(tmp_path)
    assert ids(d["labelled"]) == ["x1"] and ids(d["unlabelled"]) == ["x2", "x3"] and d["test"] == []
    assert d["labelled"][0]["image"].endswith("x1_0000.nrrd")


def test_nnunet_missing_channel_is_named(tmp_path):
    for f in ("a_0000", "a_0001", "b_0000"):
        touch(tmp_path / "imagesTr" / f"{f}.nii.gz")
    with pytest.raises(ValueError, match=r"case 'b' has channel files \[0\]; expected channels 0\.\.1"):
        semi_supervised_datalist(tmp_path)


def test_nnunet_label_without_image(tmp_path):
    touch(tmp_path / "imagesTr" / "a_0000.nii.gz")
    touch(tmp_path / "labelsTr" / "zz.nii.gz")
    with pytest.raises(ValueError, match=r"zz\.nii\.gz has no matching image zz_0000"):
        semi_supervised_datalist(tmp_path)


# ------------------------------------------------------------------------------------------------ real LA data


def test_real_la_protocol(la_dir):
    meta = json.loads((la_dir / "dataset.json").read_text())
    train_ids, test_ids = meta["train_ids"], meta["test_ids"]
    d = semi_supervised_datalist(la_dir, num_labelled=8)
    assert ids(d["labelled"]) == train_ids[:8]
    assert ids(d["unlabelled"]) == train_ids[8:] and len(d["unlabelled"]) == 72
    assert ids(d["test"]) == test_ids and len(d["test"]) == 20
    assert all(os.path.isfile(i["label"]) for i in d["test"])
    d = semi_supervised_datalist(la_dir, num_labelled=16, num_validation=4)
    assert ids(d["labelled"]) == train_ids[:16]
    assert ids(d["validation"]) == train_ids[-4:]
    assert ids(d["unlabelled"]) == train_ids[16:-4]
    assert not set(ids(d["validation"])) & set(test_ids)


# ------------------------------------------------------------------------------------------------------ errors


def test_error_dataset_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset folder .*nowhere does not exist"):
        semi_supervised_datalist(tmp_path / "nowhere")


def test_error_dataset_json_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset\.json not found"):
        semi_supervised_datalist(tmp_path, layout="decathlon")
    with pytest.raises(FileNotFoundError, match=r"dataset\.json not found and there is no imagesTr"):
        semi_supervised_datalist(tmp_path)


def test_error_invalid_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"dataset\.json is not valid JSON"):
        semi_supervised_datalist(tmp_path)


def test_error_training_key_missing(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match=r"dataset\.json has no 'training' list"):
        semi_supervised_datalist(tmp_path, layout="decathlon")
    with pytest.raises(ValueError, match=r"dataset\.json has no 'training' list.* no imagesTr/ folder"):
        semi_supervised_datalist(tmp_path)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"img": "./a.nii.gz"}, r"'training'\[1\]: expected an image path or an object with an 'image' key"),
        ({"image": 3}, r"'training'\[1\]: 'image' must be a path string"),
        ({"image": "./b.nii.gz", "label": ["x"]}, r"'training'\[1\]: 'label' must be a path string"),
    ],
)
def test_error_malformed_entry(tmp_path, entry, message):
    root = write_decathlon(tmp_path, {"training": [{"image": "./a.nii.gz"}, entry]}, ["a.nii.gz"])
    with pytest.raises(ValueError, match=message):
        semi_supervised_datalist(root)


def test_error_training_not_a_list(tmp_path):
    root = write_decathlon(tmp_path, {"training": {"image": "a"}}, [])
    with pytest.raises(ValueError, match=r"'training' must be a list"):
        semi_supervised_datalist(root)


@pytest.mark.parametrize("missing", ["labelsTr/b.nii.gz", "imagesTr/c.nii.gz"])
def test_error_listed_file_missing_on_disk(tmp_path, missing):
    meta = {"training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in "abc"]}
    files = [f"imagesTr/{c}.nii.gz" for c in "abc"] + [f"labelsTr/{c}.nii.gz" for c in "abc"]
    root = write_decathlon(tmp_path, meta, [f for f in files if f != missing])
    with pytest.raises(FileNotFoundError, match=rf"{missing.replace('.', '[.]')} is listed but missing on disk"):
        semi_supervised_datalist(root, num_labelled=1)


def test_error_unknown_id_in_dataset_json(tmp_path):
    meta = {"training": [{"image": "./a.nii.gz", "label": "./la.nii.gz"}], "train_ids": ["a", "ghost"]}
    root = write_decathlon(tmp_path, meta, ["a.nii.gz", "la.nii.gz"])
    with pytest.raises(ValueError, match=r"'train_ids' names 1 case id\(s\) that are not in .*\['ghost'\]"):
        semi_supervised_datalist(root)


def test_error_duplicate_case_id(tmp_path):
    meta = {"training": [{"image": "./x/a.nii.gz"}, {"image": "./y/a.nii.gz"}]}
    root = write_decathlon(tmp_path, meta, ["x/a.nii.gz", "y/a.nii.gz"])
    with pytest.raises(ValueError, match=r"case id 'a' appears twice"):
        semi_supervised_datalist(root)


def test_error_unknown_explicit_ids(synthetic_dir):
    with pytest.raises(ValueError, match=r"labelled names 1 case id\(s\) that are not in the train list: 'nope'"):
        semi_supervised_datalist(synthetic_dir, labelled=["case_000", "nope"])
    with pytest.raises(ValueError, match=r"'case_009' \(a test case\)"):
        semi_supervised_datalist(synthetic_dir, labelled=["case_009"])
    with pytest.raises(ValueError, match=r"unlabelled names 1 case id"):
        semi_supervised_datalist(synthetic_dir, num_labelled=1, unlabelled=["nope"])
    with pytest.raises(TypeError, match=r"labelled must be a list of case ids, got the string"):
        semi_supervised_datalist(synthetic_dir, labelled="case_000")


def test_error_fewer_labelled_than_asked(synthetic_dir, truly_unlabelled_dir):
    with pytest.raises(ValueError, match=r"num_labelled=9 but only 8 train cases have label files"):
        semi_supervised_datalist(synthetic_dir, num_labelled=9)
    with pytest.raises(ValueError, match=r"num_labelled=3 but only 2 train cases have label files"):
        semi_supervised_datalist(truly_unlabelled_dir, num_labelled=3)
    with pytest.raises(ValueError, match=r"without a label file: \['case_004'\]"):
        semi_supervised_datalist(truly_unlabelled_dir, labelled=["case_004"])


def test_error_empty_unlabelled_pool(synthetic_dir):
    with pytest.raises(ValueError, match=r"empty unlabelled pool"):
        semi_supervised_datalist(synthetic_dir, num_labelled=8)
    with pytest.raises(ValueError, match=r"empty unlabelled pool"):
        semi_supervised_datalist(synthetic_dir, num_labelled=6, num_validation=2)


def test_error_validation_without_labels(truly_unlabelled_dir):
    with pytest.raises(ValueError, match=r"num_validation=3: validation cases need labels, but only 2 of the 8"):
        semi_supervised_datalist(truly_unlabelled_dir, num_validation=3)


def test_error_overlaps_and_bad_arguments(synthetic_dir):
    with pytest.raises(ValueError, match=r"carved for validation"):
        semi_supervised_datalist(synthetic_dir, labelled=["case_007"], num_validation=1)
    with pytest.raises(ValueError, match=r"unlabelled names case\(s\) that are labelled"):
        semi_supervised_datalist(synthetic_dir, num_labelled=2, unlabelled=["case_001"])
    with pytest.raises(ValueError, match=r"num_labelled=3 but the labelled id list has 1"):
        semi_supervised_datalist(synthetic_dir, num_labelled=3, labelled=["case_000"])
    with pytest.raises(ValueError, match=r"num_labelled must be an int >= 1"):
        semi_supervised_datalist(synthetic_dir, num_labelled=0)
    with pytest.raises(ValueError, match=r"layout must be"):
        semi_supervised_datalist(synthetic_dir, layout="msd")


# --------------------------------------------------------------------------------------------- json round trip


def test_save_load_round_trip_and_monai_reader(synthetic_dir, tmp_path):
    d = semi_supervised_datalist(synthetic_dir, num_labelled=2, num_validation=1)
    path = save_datalist_json(d, tmp_path / "configs" / "datalist.json")
    assert load_datalist_json(path) == d
    assert load_decathlon_datalist(str(path), True, "labelled") == d["labelled"]
    path.write_text(json.dumps({"labelled": [{"label": "x"}]}))
    with pytest.raises(ValueError, match=r"'labelled' must be a list of objects with an 'image' key"):
        load_datalist_json(path)


def test_without_labels(synthetic_dir):
    unlabelled = semi_supervised_datalist(synthetic_dir, num_labelled=2)["unlabelled"]
    stripped = without_labels(unlabelled)
    assert [set(i) for i in stripped] == [{"image", "case"}] * 6
    assert [i["image"] for i in stripped] == [i["image"] for i in unlabelled]
    assert all("label" in i for i in unlabelled)  # the input is not modified


def test_case_id_from_filename():
    assert case_id_from_filename("./imagesTr/la_003.nii.gz") == "la_003"
    assert case_id_from_filename("x/la_003_0001.nii.gz", strip_channel=True) == "la_003"
    assert case_id_from_filename("x/la_003_0001.nii.gz") == "la_003_0001"
    assert case_id_from_filename("scan.nrrd") == "scan"


# ----------------------------------------------------------------------------------- datalist_file (any json name)


def _decathlon_images_only(root: Path, names: list[str]) -> None:
    """A Decathlon folder's files without its json: ``imagesTr/<name>.nii.gz`` (+ labels for the first two)."""
    for i, name in enumerate(names):
        touch(root / "imagesTr" / f"{name}.nii.gz")
        if i < 2:
            touch(root / "labelsTr" / f"{name}.nii.gz")


def test_datalist_file_names_any_json(tmp_path):
    _decathlon_images_only(tmp_path, ["a", "b", "c"])
    touch(tmp_path / "unlabelled" / "u1.nii.gz")  # truly unlabelled images in their own folder, no label files
    meta = {
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in "ab"]
        + [{"image": "./imagesTr/c.nii.gz"}],
        "unlabelled": ["./unlabelled/u1.nii.gz"],
    }
    (tmp_path / "dataset_unlabelled.json").write_text(json.dumps(meta))
    d = semi_supervised_datalist(tmp_path, num_labelled=1, datalist_file="dataset_unlabelled.json")
    assert ids(d["labelled"]) == ["a"] and ids(d["unlabelled"]) == ["b", "c", "u1"]
    assert "label" not in d["unlabelled"][2] and d["unlabelled"][2]["image"].endswith("unlabelled/u1.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"dataset\.json not found"):  # the default name is not there
        semi_supervised_datalist(tmp_path, num_labelled=1)


def test_error_named_json_missing_is_named_and_not_scanned(tmp_path):
    for c in ("x1", "x2"):  # a valid nnU-Net folder: the scan would work, but a named json is never replaced by it
        touch(tmp_path / "imagesTr" / f"{c}_0000.nii.gz")
        touch(tmp_path / "labelsTr" / f"{c}.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"[/\\]mine\.json not found"):
        semi_supervised_datalist(tmp_path, datalist_file="mine.json")
    assert ids(semi_supervised_datalist(tmp_path, num_labelled=1)["labelled"]) == ["x1"]  # default name: scan


def test_error_named_json_without_training(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"name": "x", "labels": {"0": "bg"}}))
    with pytest.raises(ValueError, match=r"other\.json has no 'training' list"):
        semi_supervised_datalist(tmp_path, datalist_file="other.json")


def test_error_entries_name_the_json(tmp_path):
    root = write_decathlon(tmp_path, {}, ["a.nii.gz"])
    (root / "mine.json").write_text(json.dumps({"training": [{"image": "./a.nii.gz"}, {"img": "x"}]}))
    with pytest.raises(ValueError, match=r"^mine\.json 'training'\[1\]: expected an image path"):
        semi_supervised_datalist(root, datalist_file="mine.json")
    (root / "mine.json").write_text(json.dumps({"training": [{"image": "./a.nii.gz"}], "test_ids": ["zz"]}))
    with pytest.raises(ValueError, match=r"^mine\.json 'test_ids' names 1 case id"):
        semi_supervised_datalist(root, datalist_file="mine.json")


@pytest.mark.parametrize("json_text, error, message", [
    (None, FileNotFoundError, r"dataset\.json not found; .*imagesTr is not an nnU-Net folder either: a\.nii\.gz"),
    ('{"name": "x"}', ValueError, r"dataset\.json has no 'training' list; .*imagesTr is not an nnU-Net folder either"),
])  # fmt: skip
def test_error_decathlon_folder_without_usable_json_says_so(tmp_path, json_text, error, message):
    _decathlon_images_only(tmp_path, ["a", "b"])  # Decathlon names (no _0000): the nnU-Net scan cannot read them
    if json_text is not None:
        (tmp_path / "dataset.json").write_text(json_text)
    with pytest.raises(error, match=message):
        semi_supervised_datalist(tmp_path)


def test_error_datalist_file_type(tmp_path):
    with pytest.raises(TypeError, match=r"datalist_file must be a json file name"):
        semi_supervised_datalist(tmp_path, datalist_file=None)
