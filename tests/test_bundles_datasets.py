"""The Pancreas-CT and BraTS 2019 bundles: generated from bundles/la by tools/sync_bundles.py, protocols, properties,
metadata, and a training iteration of each on synthetic data of its own shape."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import Flipd, RandRotate90d, RandScaleIntensityd

from crln_monai.workflow import verify_bundle_metadata
from crln_monai.data import make_synthetic_dataset
from crln_monai.networks.unet3d import UNet3D
from crln_monai.networks.vnet import VNet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import sync_bundles  # noqa: E402

BUNDLES = REPO / "bundles"
GENERATED = sorted(sync_bundles.BUNDLE_VALUES)
# docs/method.md#hyper-parameters: (labelled cases, prototypes K, xi, lambda_cp) of each protocol; the 10 % one is
# the default
PROTOCOLS = {
    ("la", "protocol_la8.json"): (8, 16, 0.6, 0.5),
    ("la", "protocol_la16.json"): (16, 16, 0.9, 0.5),
    ("pancreas_ct", "protocol_pancreas6.json"): (6, 4, 0.6, 1.0),
    ("pancreas_ct", "protocol_pancreas12.json"): (12, 16, 0.3, 0.5),
    ("brats19", "protocol_brats25.json"): (25, 4, 0.1, 0.5),
    ("brats19", "protocol_brats50.json"): (50, 8, 1.0, 0.5),
}
DEFAULT_PROTOCOL = {
    "la": "protocol_la8.json", "pancreas_ct": "protocol_pancreas6.json", "brats19": "protocol_brats25.json",
}  # fmt: skip
SPEED = {"num_prototypes": 2, "num_queries": 8, "num_negatives": 16, "num_workers": 0, "log_interval": 1}


def _config(bundle, name):
    return json.loads((BUNDLES / bundle / "configs" / name).read_text())


def _workflow(bundle, extra=(), workflow_type="train", **override) -> ConfigWorkflow:
    configs = BUNDLES / bundle / "configs"
    wf = ConfigWorkflow(
        config_file=[str(configs / "train.json")] + [str(configs / c) for c in extra],
        meta_file=str(configs / "metadata.json"), logging_file=False, workflow_type=workflow_type, run_id="training",
        bundle_root=str(BUNDLES / bundle), **override,
    )  # fmt: skip
    wf.initialize()
    return wf


def _copy_bundles(root: Path) -> None:
    """The reference bundle and the generated ones (configs and LICENSE only) under ``root/bundles``."""
    for bundle in ["la", *GENERATED]:
        shutil.copytree(BUNDLES / bundle / "configs", root / "bundles" / bundle / "configs")
        shutil.copy(BUNDLES / bundle / "LICENSE", root / "bundles" / bundle / "LICENSE")
    for copy in sync_bundles.LIBRARY_COPIES:  # the library's copy of LA's inference.json
        (root / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / copy, root / copy)


# ------------------------------------------------------------------------------------------ generated files


def test_generated_files_are_up_to_date():
    assert sync_bundles.main(["--check"]) == 0, "run `python tools/sync_bundles.py`"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "sync_bundles.py"), "--check"], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_check_names_stale_files_and_sync_repairs_them(tmp_path, capsys):
    _copy_bundles(tmp_path)
    la_train = tmp_path / "bundles/la/configs/train.json"
    config = json.loads(la_train.read_text())
    config["lr"] = 0.01  # a shared value changes in the reference bundle
    la_train.write_text(json.dumps(config))
    (tmp_path / "bundles/brats19/configs/inference.json").write_text("{}")  # a hand edit of a generated file
    (tmp_path / "bundles/pancreas_ct/LICENSE").unlink()
    assert sync_bundles.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    stale = {line.split("out of date: ")[1] for line in err.splitlines() if line.startswith("out of date: ")}
    assert stale == {
        "bundles/pancreas_ct/configs/train.json", "bundles/brats19/configs/train.json", "bundles/custom/configs/train.json",
        "bundles/brats19/configs/inference.json", "bundles/pancreas_ct/LICENSE",
    }  # fmt: skip
    assert sync_bundles.main(["--root", str(tmp_path)]) == 0
    assert sync_bundles.main(["--check", "--root", str(tmp_path)]) == 0
    for bundle in GENERATED:
        assert json.loads((tmp_path / f"bundles/{bundle}/configs/train.json").read_text())["lr"] == 0.01


def test_a_declared_key_unknown_to_the_reference_is_refused(monkeypatch):
    monkeypatch.setitem(sync_bundles.BUNDLE_VALUES, "pancreas_ct", {"patch_sizes": [96, 96, 96]})
    with pytest.raises(ValueError, match=r"\['patch_sizes'\]"):
        sync_bundles.generated_files(REPO, "pancreas_ct")
    with pytest.raises(KeyError, match="not declared"):
        sync_bundles.generated_files(REPO, "kits")


@pytest.mark.parametrize("bundle", GENERATED)
@pytest.mark.parametrize("name", ["train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"])
def test_generated_config_differs_from_la_only_in_declared_keys(bundle, name):
    la, generated = _config("la", name), _config(bundle, name)
    declared = sync_bundles.BUNDLE_VALUES[bundle]
    assert list(generated) == [sync_bundles.GENERATED_KEY, *la]  # same keys, same order, the note first
    assert generated[sync_bundles.GENERATED_KEY].startswith("by tools/sync_bundles.py")
    for key, value in la.items():
        assert generated[key] == (declared[key] if key in declared else value), key
    if name == "train.json":
        assert {k for k in la if la[k] != generated[k]} <= set(declared)
        assert set(declared) <= set(la)


def test_generated_text_files():
    assert (BUNDLES / "brats19/LICENSE").read_bytes() == (BUNDLES / "la/LICENSE").read_bytes()
    path = BUNDLES / "pancreas_ct/configs/logging.conf"
    header, rest = path.read_text().split("\n", 1)
    assert header.startswith("# _generated_") and rest == (BUNDLES / "la/configs/logging.conf").read_text()
    code = f"import logging.config as c, logging; c.fileConfig({str(path)!r}); logging.getLogger().info('logged')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "root - INFO - logged" in result.stdout, result.stderr


# ------------------------------------------------------------------------------------------------ protocols


@pytest.mark.parametrize(("bundle", "name"), sorted(PROTOCOLS))
def test_protocol_files_hold_the_method_values_and_only_train_keys(bundle, name):
    protocol = _config(bundle, name)
    train = _config(bundle, "train.json")
    assert set(protocol) <= set(train), "a key train.json lacks would be silently ignored by MONAI"
    assert (protocol["num_labelled"], protocol["num_prototypes"], protocol["xi"], protocol["lambda_cp"]) == PROTOCOLS[
        (bundle, name)
    ]
    if DEFAULT_PROTOCOL[bundle] == name:
        assert all(train[k] == v for k, v in protocol.items()), "train.json's default is the 10 % protocol"


def test_multimodal_override_is_four_channels_four_classes():
    multimodal = _config("brats19", "multimodal.json")
    assert multimodal == {
        "in_channels": 4, "num_classes": 4,
        "class_names": ["background", "oedema", "necrotic / non-enhancing tumour core", "enhancing tumour"],
    }  # fmt: skip
    assert set(multimodal) <= set(_config("brats19", "train.json"))  # inference.json is layered on train.json


# --------------------------------------------------------------------------------------- properties, metadata


@pytest.mark.parametrize(
    ("bundle", "extra", "channels", "backbone", "weak_rot_flip_brightness"),
    [
        ("la", [], 1, VNet, True),
        ("pancreas_ct", [], 1, VNet, False),
        ("brats19", [], 1, UNet3D, True),
        ("brats19", ["multimodal.json"], 4, UNet3D, True),
    ],
)
def test_properties_metadata_backbone_and_weak_pipeline(
    tmp_path, bundle, extra, channels, backbone, weak_rot_flip_brightness
):
    classes = 4 if extra else 2
    data = make_synthetic_dataset(
        tmp_path / "data", num_cases=6, num_test=1, shape=(24, 24, 16), num_channels=channels, num_classes=classes
    )
    wf = _workflow(bundle, extra, dataset_dir=str(data), num_labelled=2, ckpt_dir=str(tmp_path / "models"))
    assert wf.check_properties() == []
    verify_bundle_metadata(BUNDLES / bundle / "configs" / "metadata.json")
    network = wf.parser.get_parsed_content("network")
    assert isinstance(network.backbone, backbone)
    steps = wf.parser.get_parsed_content("train::preprocessing").transforms
    weak = [s for s in steps if isinstance(s, (Flipd, RandRotate90d, RandScaleIntensityd))]
    assert len(weak) == (3 if weak_rot_flip_brightness else 0)
    datalist = wf.parser.get_parsed_content("datalist")
    assert [len(datalist[k]) for k in ("labelled", "unlabelled", "validation", "test")] == [2, 3, 0, 1]


@pytest.mark.parametrize(
    ("bundle", "extra"),
    [("la", ["protocol_la16.json"]), ("pancreas_ct", ["protocol_pancreas12.json"]), ("brats19", ["protocol_brats50.json", "multimodal.json"])],
)
def test_a_training_checkpoint_loads_into_the_inference_network(bundle, extra):
    from ignite.handlers import Checkpoint
    from monai.bundle import ConfigParser

    configs = BUNDLES / bundle / "configs"
    parsed = {}
    for name in ("train.json", "inference.json"):
        parser = ConfigParser()  # inference.json is layered on train.json: one network definition
        parser.read_config([str(configs / f) for f in dict.fromkeys(["train.json", name, *extra])])
        parser.update({"bundle_root": str(BUNDLES / bundle), "device": "$torch.device('cpu')"})
        parsed[name] = parser
    teacher = parsed["train.json"].get_parsed_content("teacher")
    predictor = parsed["inference.json"].get_parsed_content("network")
    Checkpoint.load_objects({"model": predictor}, {"model": teacher.state_dict()}, strict=True)
    loaded = predictor.state_dict()
    assert loaded.keys() == teacher.state_dict().keys()
    for key, value in teacher.state_dict().items():
        assert torch.equal(loaded[key], value), key


# ------------------------------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bundle", "extra", "channels", "classes"),
    [
        ("pancreas_ct", ["protocol_pancreas6.json"], 1, 2),
        ("brats19", ["protocol_brats25.json", "multimodal.json"], 4, 4),
    ],
)
def test_one_training_iteration_on_synthetic_data_of_the_bundles_shape(tmp_path, bundle, extra, channels, classes):
    data = make_synthetic_dataset(
        tmp_path / "data", num_cases=4, num_test=1, shape=(100, 100, 100), num_channels=channels, num_classes=classes
    )
    meta = json.loads((data / "dataset.json").read_text())  # a published validation split, as BraTS 2019 has
    meta["train_ids"], meta["val_ids"] = ["case_000", "case_001"], ["case_002"]
    (data / "dataset.json").write_text(json.dumps(meta))
    wf = _workflow(
        bundle, extra, dataset_dir=str(data), ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"),
        num_labelled=1, labelled_batch_size=1, unlabelled_batch_size=1, max_epochs=1, epoch_length=1, rectify_start=0,
        val_interval=1, **SPEED,
    )  # fmt: skip
    assert wf.parser.get_parsed_content("patch_size") == [96, 96, 96]
    assert [i["case"] for i in wf.parser.get_parsed_content("datalist")["validation"]] == ["case_002"]
    wf.run()
    validator = wf.parser.get_parsed_content("validate::evaluator")
    assert validator.state.iteration == 1 and 0.0 <= validator.state.metrics["val_mean_dice"] <= 1.0
    assert (tmp_path / "models" / "model.pt").is_file()  # the best checkpoint, chosen on val_ids
    out = wf.parser.get_parsed_content("train::trainer").state.output
    for key in ("loss", "loss_sup", "loss_u", "loss_cp"):
        assert math.isfinite(float(out[key])), key
    assert tuple(out["image"].shape) == (2, channels, 96, 96, 96)
    assert set(torch.unique(out["label"][0]).tolist()) == set(range(classes))  # the labelled crop holds every class
    saved = torch.load(tmp_path / "models" / "model_last.pt", map_location="cpu", weights_only=True)
    teacher = wf.parser.get_parsed_content("teacher")
    assert saved["model"].keys() == teacher.state_dict().keys()
    assert saved["settings"]["network"]["in_channels"] == channels and saved["settings"]["class_names"] == wf.parser.get_parsed_content("class_names")
    predictor = wf.parser.get_parsed_content("inference_network").eval()
    with torch.no_grad():
        logits = predictor(torch.rand(1, channels, 96, 96, 96))
    assert logits.shape == (1, classes, 96, 96, 96)
