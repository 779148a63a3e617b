"""The bundle configuration schema: unknown keys, wrong types and ranges, switches, checks across keys, the bundle
wiring (checked before any work, only plain values resolved) and a real ``monai.bundle run`` refusing a misspelt key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from crln_monai.workflow import SCHEMA, check_config
from crln_monai.networks.rectifier import RECTIFIER_MODES

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
HEAVY = ("datalist", "network", "network_def", "teacher", "train::dataset", "train::trainer", "input_files", "rank")


def _parser(*names: str, bundle: str = "la", **override) -> ConfigParser:
    """A bundle's configs merged and overridden as ``monai.bundle run`` does, then parsed (nothing resolved)."""
    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / f"{n}.json") for n in names])
    parser.read_meta(str(configs / "metadata.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), **override})
    parser.parse()
    return parser


def _error(config) -> str:
    with pytest.raises((ValueError, TypeError)) as error:
        check_config(config)
    return str(error.value)


def _config_files():
    """Every hand-written bundle config, override files and the library's config templates included (the generated
    bundle configs are copies of bundles/la, checked by sync_bundles)."""
    paths = sorted(REPO.glob("bundles/*/configs/**/*.json")) + sorted(REPO.glob("crln_monai/workflow/*.json"))
    for path in paths:
        config = json.loads(path.read_text())
        if path.name not in ("metadata.json", "metadata_schema.json") and "_generated_" not in config:
            yield path, config


def test_every_top_level_key_of_the_bundles_is_declared():
    files = list(_config_files())
    assert len(files) >= 10
    for path, config in files:
        for key in config:
            top = key.lstrip("+").replace("#", "::").split("::")[0]  # "+initialize", "train::sampler::rank"
            assert top in SCHEMA, f"{path.relative_to(REPO)}: top-level key {top!r} has no schema entry"


_RUNS = [("la", "train"), ("la", "train", "evaluate"), ("la", "train", "evaluate", "demo"), ("la", "train", "inference"),
         ("la", "train", "multi_gpu_train"), ("la", "train", "protocol_la16"), ("la", "train", "protocol_la8"),
         ("pancreas_ct", "train", "evaluate", "protocol_pancreas12"), ("pancreas_ct", "train", "inference"),
         ("brats19", "train", "multimodal", "protocol_brats50"), ("brats19", "train", "multimodal", "inference"),
         ("custom", "train", "evaluate"), ("custom", "train", "inference")]  # fmt: skip
_RUNS += [("la", "train", f"ablation/{p.stem}") for p in sorted(CONFIGS.glob("ablation/*.json"))]
_RUNS = [run for run in _RUNS if (REPO / "bundles" / run[0] / "configs").is_dir()]


@pytest.mark.parametrize("bundle, names", [(run[0], run[1:]) for run in _RUNS], ids=["+".join(run) for run in _RUNS])
def test_the_bundle_configs_pass_and_only_plain_values_are_resolved(bundle, names):
    parser = _parser(*names, bundle=bundle)
    check_config(parser)  # no process group, no data set on disk: "rank" and "datalist" must stay unresolved
    resolved = parser.ref_resolver.resolved_content
    assert resolved["num_prototypes"] == parser["num_prototypes"] and resolved["ckpt_dir"].endswith("/models")
    assert {"lambda_u", "patch_size", "use_dim", "seed", "device", "output_dir"} <= set(resolved)
    assert not [key for key in HEAVY if key in resolved]


def test_initialize_checks_the_config_first():
    for names in (("train",), ("train", "evaluate", "demo"), ("train", "inference"), ("train", "multi_gpu_train")):
        assert _parser(*names)["initialize"][0] == "$crln_monai.workflow.check_config()", names


def test_unknown_key_is_refused_with_the_closest_known_keys():
    message = _error({"num_prototype": 4})
    assert message == "unknown config key 'num_prototype' (did you mean 'num_prototypes'?)."
    message = _error({"unlabeled_batch_size": 2, "Lambda_U": 1.0, "zzz": 1})
    assert "unknown config key 'unlabeled_batch_size' (did you mean 'unlabelled_batch_size' or" in message
    assert "unknown config key 'Lambda_U' (did you mean 'lambda_u'?)" in message
    assert "unknown config key 'zzz' (no similar key" in message


def test_unknown_override_in_the_parsed_bundle():
    assert "unknown config key 'num_prototype' (did you mean 'num_prototypes'?)" in _error(_parser("train", num_prototype=4))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"num_prototypes": "abc"}, "config key 'num_prototypes' must be an int >= 1, got 'abc'"),
        ({"num_prototypes": 0}, "config key 'num_prototypes' must be an int >= 1, got 0"),
        ({"num_prototypes": 2.0}, "config key 'num_prototypes' must be an int >= 1, got 2.0"),
        ({"lambda_u": -1}, "config key 'lambda_u' must be a number >= 0, got -1"),
        ({"lambda_u": "abc"}, "config key 'lambda_u' must be a number >= 0, got 'abc'"),
        ({"lambda_u": float("nan")}, "config key 'lambda_u' must be a number >= 0, got nan"),
        ({"lr": 0}, "config key 'lr' must be a number > 0, got 0"),
        ({"momentum": 1.0}, "config key 'momentum' must be a number >= 0 and < 1, got 1.0"),
        ({"cache_rate": 1.5}, "config key 'cache_rate' must be a number >= 0 and <= 1, got 1.5"),
        ({"seed": -1}, "config key 'seed' must be an int >= 0 and <= 4294967295, got -1"),
        ({"patch_size": [112, 112]}, "config key 'patch_size' must be a list of 3 ints >= 1, got [112, 112]"),
        ({"num_labelled": "8"}, "config key 'num_labelled' must be null or an int >= 1, got '8'"),
        ({"rectifier": "learnable"}, f"config key 'rectifier' must be one of {list(RECTIFIER_MODES)}, got 'learnable'"),
        ({"backbone": "resnet"}, "config key 'backbone' must be one of ['vnet', 'unet3d', 'unet2d'], got 'resnet'"),
        ({"amp_dtype": "fp8"}, "config key 'amp_dtype' must be null, a torch.dtype or one of"),
        ({"device": "gpu"}, "config key 'device' must be a torch.device or a device name"),
        ({"resume": "true"}, "config key 'resume' must be null, True, False, 'auto' or a checkpoint path"),
        ({"strides": [[2, 2, 3]]}, "config key 'strides' must be null or per-level down-sampling factors"),
        ({"orientation": "RAX"}, "config key 'orientation' must be null or 3 axis codes"),
        ({"normalise": "percentile"}, "config key 'normalise' must be null or one of ['minmax', 'zscore', 'ct', 'none']"),
    ],
)  # fmt: skip
def test_wrong_type_or_range_names_key_value_and_what_is_allowed(override, message):
    assert message in _error(override)


def test_wrong_values_of_the_parsed_bundle_are_resolved_first():
    assert "config key 'lambda_u' must be a number >= 0, got -1" in _error(_parser("train", lambda_u=-1))
    assert "config key 'num_prototypes' must be an int >= 1, got 'abc'" in _error(_parser("train", num_prototypes="abc"))
    # a reference to another typed key is resolved; the value, not the expression, is checked
    assert "config key 'num_queries' must be an int >= 1, got -2" in _error(_parser("train", num_queries="$@seed - 2"))
    assert "config key 'lr' could not be evaluated from '$1 / 0' (ZeroDivisionError" in _error(_parser("train", lr="$1 / 0"))


def test_a_value_that_needs_the_data_is_not_resolved_by_the_check():
    parser = _parser("train", num_labelled="$len(@datalist['labelled'])")
    check_config(parser)
    assert "num_labelled" not in parser.ref_resolver.resolved_content and "datalist" not in parser.ref_resolver.resolved_content


def test_switches_keep_the_python_fire_message():
    with pytest.raises(TypeError) as error:
        check_config(_parser("train", use_dim="false", cutmix=1))
    message = str(error.value)
    assert "use_dim='false'" in message and "cutmix=1" in message
    assert "write True or False with a capital letter" in message and "python-fire reads 'false' as a string" in message


@pytest.mark.parametrize(
    "values, message",
    [
        ({"use_unlabelled": True, "unlabelled_batch_size": 0}, "use_unlabelled=True needs unlabelled_batch_size >= 1"),
        ({"use_unlabelled": True, "supervised_iterations": 40, "max_epochs": 4, "epoch_length": 10},
         "supervised_iterations=40 leaves none of the run's 40 iterations for the unlabelled losses"),
        ({"class_names": ["background"], "num_classes": 2}, "class_names must have num_classes=2 entries, got 1"),
        ({"patch_size": [112, 112, 80], "sw_stride": [18, 18, 81]}, "sw_stride [18, 18, 81] must be in [1, patch]"),
        ({"backbone": "vnet", "strides": None, "patch_size": [112, 112, 72]}, "patch_size (112, 112, 72) has size 72 on axis 2"),
        ({"backbone": "unet3d", "strides": [2, 2, 2], "patch_size": [96, 96, 96]}, "strides must be None or 4 entries"),
        ({"orientation": "RAS", "target_spacing": None, "normalise": "ct", "intensity_range": None,
          "intensity_stats": None}, "normalise='ct' needs intensity_range"),
    ],
)  # fmt: skip
def test_keys_that_must_agree(values, message):
    assert message in _error(values)


def test_keys_that_agree_pass():
    check_config({"use_unlabelled": True, "supervised_iterations": 39, "max_epochs": 4, "epoch_length": 10})
    check_config({"use_unlabelled": False, "supervised_iterations": 40, "max_epochs": 4, "epoch_length": 10})
    check_config({"use_unlabelled": False, "unlabelled_batch_size": 0, "backbone": "vnet", "patch_size": [96, 96, 48],
                  "strides": [2, 2, 2, [2, 2, 1]], "sw_stride": [96, 1, 48], "class_names": ["bg", "a", "b"],
                  "num_classes": 3})  # fmt: skip


def test_check_config_outside_a_bundle_needs_a_config():
    with pytest.raises(RuntimeError, match="must run inside a bundle expression"):
        check_config()


def test_cli_run_with_a_misspelt_override_fails_before_writing_anything(tmp_path):
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}','{CONFIGS / 'demo.json'}']"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", files,
        "--bundle_root", str(REPO / "bundles" / "la"), "--demo_dir", str(tmp_path / "demo"), "--num_prototype", "4",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "ValueError: unknown config key 'num_prototype' (did you mean 'num_prototypes'?)." in result.stderr
    assert list(tmp_path.iterdir()) == []  # no synthetic data, no models, no eval folder
