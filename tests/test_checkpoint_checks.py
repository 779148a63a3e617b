"""Checked checkpoint loading: bad files, settings that differ from the config, foreign state dicts, the inference
config layered on train.json (one network and preprocessing definition)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser, ConfigWorkflow

from crln_monai.workflow.export import INFERENCE_TEMPLATE
from crln_monai.overrides import NETWORK_SETTING_KEYS, cli_value, override_key, settings_differences
from crln_monai.data import make_synthetic_dataset
from crln_monai.handlers import CheckedCheckpointLoader, read_checkpoint, state_dict_mismatch
from crln_monai.networks import CRLN, RectifiedPrediction

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
TINY = {"patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2, "device": "$torch.device('cpu')"}


def _parser(files=("train.json",), **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    parser.update({"bundle_root": str(REPO / "bundles" / "la"), **TINY, **override})
    return parser


def _loader(path, module, settings=None) -> CheckedCheckpointLoader:
    return CheckedCheckpointLoader(load_path=str(path), load_dict={"model": module}, settings=settings)


# ------------------------------------------------------------------------------------------------ bad files


def _bad_files(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "random.pt": rng.bytes(4096),
        "random_pickle_start.pt": b"\x80" + rng.bytes(4096),  # passes the format sniff, fails in the unpickler
        "notes.pt": b"epoch 10: dice 0.91\nthese are my notes, not weights\n",
        "empty.pt": b"",
    }
    torch.save({"a": torch.zeros(3)}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    files["truncated.pt"] = whole[: len(whole) // 2]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"a": np.zeros(3)}, tmp_path / "numpy.pt")  # a pickled object, not a tensor
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    return {
        "random.pt": "not a PyTorch checkpoint",
        "random_pickle_start.pt": "not a PyTorch checkpoint",
        "notes.pt": "not a PyTorch checkpoint",
        "empty.pt": "is empty (0 bytes)",
        "truncated.pt": "truncated or corrupted",
        "numpy.pt": "objects other than tensors",
        "list.pt": "holds a list",
    }


def test_bad_files_are_refused_in_one_line_naming_the_file(tmp_path):
    for name, fragment in _bad_files(tmp_path).items():
        with pytest.raises(ValueError) as error:
            read_checkpoint(tmp_path / name)
        message = str(error.value)
        assert fragment in message and str(tmp_path / name) in message, message
        assert "\n" not in message and "weights_only" not in message, message
    with pytest.raises(FileNotFoundError, match="missing.pt not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_loader_refuses_a_text_file_before_loading_anything(tmp_path):
    (tmp_path / "model.pt").write_text("hello")
    network = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        _loader(tmp_path / "model.pt", network)(Engine(lambda e, b: None))
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


# ---------------------------------------------------------------------------------------------- settings


def test_settings_differences_and_overrides():
    config = {
        "network": {"use_dim": True, "use_projection": True, "patch_size": [32, 32, 16], "dim_kwargs": {"aggregation": "cross_class"}},
        "preprocessing": {"normalise": "minmax", "target_spacing": None},
        "class_names": ["background", "left atrium"],
    }  # fmt: skip
    stored = {
        "network": {"use_dim": False, "use_projection": True, "patch_size": (32, 32, 16), "dim_kwargs": {"aggregation": "sum"}},
        "preprocessing": {"normalise": "zscore", "target_spacing": [1.0, 1.0, 2.5]},
        "class_names": ["background", "LA"],
    }  # fmt: skip
    diffs = settings_differences(stored, config)
    assert [d.key for d in diffs] == ["use_dim", "dim_aggregation", "normalise", "target_spacing", "class_names"]
    assert settings_differences(config, config) == []
    assert settings_differences({"network": {"strides": None}}, config) == []  # recorded on one side only
    assert cli_value([1.0, 1.0, 2.5]) == '"[1.0,1.0,2.5]"' and cli_value(False) == "False" and cli_value("zscore") == "zscore"
    assert cli_value(["background", "left atrium"]) == "\"['background','left atrium']\""
    assert override_key("network", "backbone_kwargs.base_filters") == "network_settings::backbone_kwargs::base_filters"


def test_network_setting_keys_match_train_json():
    """Each network setting is set by the bundle key the override table names (use_projection ← use_cps ...)."""
    raw = json.loads((CONFIGS / "train.json").read_text())["network_settings"]

    def refs(value, prefix=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from refs(v, f"{prefix}.{k}" if prefix else k)
        else:
            yield prefix, value

    for path, ref in refs(raw):
        assert ref == "@" + override_key("network", path), (path, ref)
        assert path in NETWORK_SETTING_KEYS or "." not in path
    assert set(NETWORK_SETTING_KEYS) <= dict(refs(raw)).keys()
    assert raw["strides"] == "@strides" and "strides" in json.loads((CONFIGS / "train.json").read_text())


def test_mean_teacher_checkpoint_evaluated_with_the_default_config_names_the_switches(tmp_path):
    mean_teacher = _parser(use_dim=False, use_cps=False)
    path = tmp_path / "model.pt"
    torch.save(
        {"model": mean_teacher.get_parsed_content("teacher").state_dict(), "settings": mean_teacher.get_parsed_content("settings")},
        path,
    )  # fmt: skip
    default = _parser(("train.json", "evaluate.json"), checkpoint=str(path))
    loader = default.get_parsed_content("test::handlers::0")
    assert isinstance(loader, CheckedCheckpointLoader)
    with pytest.raises(ValueError) as error:
        loader.check()
    message = str(error.value)
    assert "was trained with use_dim=False, use_cps=False" in message, message
    assert "the config says use_dim=True, use_cps=True" in message and "add --use_dim False --use_cps False" in message
    assert "Missing key" not in message and "\n" not in message
    # with those overrides the same checkpoint loads
    matching = _parser(("train.json", "evaluate.json"), checkpoint=str(path), use_dim=False, use_cps=False)
    matching.get_parsed_content("test::handlers::0")(Engine(lambda e, b: None))


def test_foreign_state_dict_without_settings_gets_a_short_message(tmp_path):
    net = CRLN(patch_size=[32, 32, 16], num_prototypes=2, use_projection=False)
    four_classes = CRLN(num_classes=4, patch_size=[32, 32, 16], num_prototypes=2, use_projection=False)
    torch.save(four_classes.state_dict(), tmp_path / "four.pt")
    with pytest.raises(ValueError) as error:
        _loader(tmp_path / "four.pt", net).check()
    message = str(error.value)
    assert "shape mismatch" in message and "backbone.head.weight: checkpoint [4, 16, 1, 1, 1], network [2, 16, 1, 1, 1]" in message
    assert "it holds no settings" in message and "\n" not in message and len(message) < 1200

    mean_teacher = CRLN(patch_size=[32, 32, 16], num_prototypes=2, use_dim=False, use_projection=False)
    torch.save(mean_teacher.state_dict(), tmp_path / "mt.pt")
    with pytest.raises(ValueError, match=r"does not fit the network 'model': \d+ missing keys \(dim\.") as error:
        _loader(tmp_path / "mt.pt", net).check()
    assert ", ...)" in str(error.value)

    resume = {"student": net.state_dict(), "teacher": net.state_dict(), "trainer": {"iteration": 3}}
    torch.save(resume, tmp_path / "resume.pt")
    with pytest.raises(ValueError, match=r"holds the objects \['student', 'teacher', 'trainer'\] but no 'model'"):
        _loader(tmp_path / "resume.pt", net).check()


def test_old_checkpoints_without_settings_load_when_they_fit(tmp_path):
    trained = CRLN(patch_size=[32, 32, 16], num_prototypes=2)  # with the projection head, as training saves it
    torch.save(trained.state_dict(), tmp_path / "plain.pt")
    predictor = RectifiedPrediction(CRLN(patch_size=[32, 32, 16], num_prototypes=2, use_projection=False))
    assert state_dict_mismatch(predictor, trained.state_dict()) is None  # the projection head is dropped on loading
    _loader(tmp_path / "plain.pt", predictor, settings={"network": {"use_dim": False}})(Engine(lambda e, b: None))
    for key, value in predictor.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key


# ---------------------------------------------------------------------------------------- inference config


def test_la_inference_json_is_the_library_template_and_layers_on_train_json():
    assert json.loads((CONFIGS / "inference.json").read_text()) == json.loads(INFERENCE_TEMPLATE.read_text())
    inference = json.loads((CONFIGS / "inference.json").read_text())
    assert "network_settings" not in inference and "preprocessing_settings" not in inference  # defined once, in train.json


def test_layered_inference_workflow_has_every_infer_property(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=4, num_test=1, shape=(24, 24, 16))
    wf = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "inference.json")], meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False, workflow_type="infer", run_id="inference", bundle_root=str(REPO / "bundles" / "la"),
        input=str(data / "imagesTr"), output_dir=str(tmp_path / "out"), **TINY,
    )  # fmt: skip
    wf.initialize()
    assert wf.check_properties() == []
    network = wf.parser.get_parsed_content("network_def")
    teacher = _parser().get_parsed_content("teacher")
    assert isinstance(network, RectifiedPrediction)
    assert network.state_dict().keys() == teacher.state_dict().keys()  # the same network as training builds
