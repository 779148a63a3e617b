"""Every trained run exports a self-contained MONAI bundle: contents, properties, inference with no override."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.apps.utils import HashCheckError
from monai.bundle import ConfigParser, ConfigWorkflow, download_large_files

from crln_monai.workflow import export_bundle, export_name, verify_bundle_metadata
from crln_monai.data import make_synthetic_dataset
from crln_monai.networks import CRLN

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
TINY = {"patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2}
INFERENCE = {"patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "sw_batch_size": 2, "amp_dtype": None}


def _settings(**override):
    """The bundle's ``settings`` (network, preprocessing, class names) as train.json resolves them."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / "la"), "device": "$torch.device('cpu')", **TINY, **override})
    return parser.get_parsed_content("settings"), parser.get_parsed_content("teacher")


def _infer_workflow(bundle: Path, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False, workflow_type="infer", run_id="inference", bundle_root=str(bundle), **override,
    )  # fmt: skip
    wf.initialize()
    return wf


def test_export_name(tmp_path):
    (tmp_path / "acdc").mkdir()
    (tmp_path / "acdc" / "mine.json").write_text(json.dumps({"name": "ACDC: cine-MRI / 2017"}))
    assert export_name(tmp_path / "acdc", "mine.json") == "ACDC_cine-MRI_2017"
    assert export_name(tmp_path / "acdc") == "acdc"  # no dataset.json: the folder's name
    (tmp_path / "acdc" / "dataset.json").write_text(json.dumps({"name": "  /// "}))
    assert export_name(tmp_path / "acdc") == "acdc"


@pytest.mark.parametrize(
    "switches",
    [{}, {"rectifier": "learnable_v2"}, {"dim_aggregation": "sum"}, {"use_dim": False, "use_cps": False}],
    ids=["crln", "learnable_v2", "aggregation_sum", "mean_teacher"],
)
def test_export_contents_properties_and_inference(tmp_path, switches):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=2, num_test=0, shape=(36, 28, 12))
    settings, teacher = _settings(**switches)
    bundle = export_bundle(
        tmp_path / "export", "tiny", teacher.state_dict(), settings, INFERENCE, dataset={"name": "tiny", "modality": {"0": "MRI"}},
        counts={"labelled": 2, "unlabelled": 1}, results={"validation": {"val_mean_dice": 0.5, "epoch": 1}},
    )  # fmt: skip
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "LICENSE", "configs/inference.json", "configs/metadata.json", "docs/README.md", "large_files.yml",
        "models/model.pt",
    ]  # fmt: skip
    download_large_files(str(bundle))  # MONAI checks model.pt against the recorded hash and downloads nothing
    tampered = shutil.copytree(bundle, tmp_path / "tampered")
    (tampered / "models" / "model.pt").write_bytes(b"tampered")
    with pytest.raises(HashCheckError, match="sha256 hash check"):
        download_large_files(str(tampered))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_settings"] == {**json.loads(json.dumps(settings["network"])), "use_projection": False}
    assert config["preprocessing_settings"] == json.loads(json.dumps(settings["preprocessing"]))
    assert config["class_names"] == settings["class_names"] and config["patch_size"] == [32, 32, 16]
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    CRLN(**config["network_settings"]).load_state_dict(state, strict=True)  # plain, fits, no projection head
    assert not any(k.startswith("projection.") for k in state)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    verify_bundle_metadata(bundle / "configs" / "metadata.json")
    assert meta["required_packages_version"]["crln-monai"] and meta["eval_metrics"] == {"validation_val_mean_dice": 0.5}
    assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == settings["class_names"]
    assert "python -m monai.bundle run inference" in (bundle / "docs" / "README.md").read_text()

    case = sorted((data / "imagesTr").glob("*.nii.gz"))[0]
    wf = _infer_workflow(bundle, input=str(case), output_dir=str(tmp_path / "out"))
    assert wf.check_properties() == []
    wf.run()
    image, seg = nib.load(case), nib.load(tmp_path / "out" / (case.name[: -len(".nii.gz")] + "_seg.nii.gz"))
    assert seg.shape == image.shape[:3] and np.allclose(seg.affine, image.affine)
    assert set(np.unique(seg.get_fdata())) <= {0.0, 1.0}
    low, high = meta["network_data_format"]["outputs"]["pred"]["value_range"]  # what the inferer gives, per class
    with torch.no_grad():
        pred = wf.parser.get_parsed_content("inferer")(torch.randn(1, 1, 36, 28, 12), wf.parser.get_parsed_content("network"))
    assert pred.shape[1] == len(settings["class_names"]) and low <= float(pred.min()) and float(pred.max()) <= high
    assert torch.allclose(pred.sum(dim=1), torch.ones(()), atol=1e-5)


def test_a_second_export_replaces_the_first_atomically(tmp_path):
    settings, teacher = _settings()
    first = export_bundle(tmp_path, "run", teacher.state_dict(), settings, INFERENCE, results={})
    (first / "stale.txt").write_text("from the first export")
    (tmp_path / ".run-dead.tmp").mkdir()  # left by a killed export
    second = export_bundle(tmp_path, "run", teacher.state_dict(), settings, INFERENCE, results={"test": {"dice": 0.7}})
    assert second == first and not (second / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert json.loads((second / "configs" / "metadata.json").read_text())["results"] == {"test": {"dice": 0.7}}


@pytest.mark.slow
def test_a_training_run_exports_a_bundle_that_segments_with_no_override(tmp_path):
    """A few iterations with validation (the best model is exported), then ``monai.bundle run inference`` on the
    export alone, in a fresh process, from another working directory."""
    train = json.loads((CONFIGS / "train.json").read_text())
    wf = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in ("train.json", "evaluate.json", "demo.json")], logging_file=False,
        meta_file=str(CONFIGS / "metadata.json"), workflow_type="train", run_id="training",
        bundle_root=str(REPO / "bundles" / "la"), demo_dir=str(tmp_path), synthetic_shape=[40, 40, 24],
        max_epochs=1, epoch_length=2, val_interval=1, num_validation=2, num_queries=8, num_negatives=16,
        training=train["training"], **TINY,  # train.json's run list: no test-set evaluation
    )  # fmt: skip
    wf.initialize()
    wf.run()
    bundle = tmp_path / "export" / "synthetic-LA"
    best = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert best["settings"]["network"]["use_projection"] is True
    exported = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert exported.keys() == {k for k in best["model"] if not k.startswith("projection.")}
    assert all(torch.equal(exported[k], best["model"][k]) for k in exported)  # the best teacher
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["results"]["validation"]["epoch"] == 1 and 0.0 <= meta["eval_metrics"]["validation_val_mean_dice"] <= 1.0

    inputs = tmp_path / "new_images"
    inputs.mkdir()
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])  # not RAS: reoriented as in training, inverted on the way out
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 44, 12), dtype=np.float32), affine), inputs / "a.nii.gz")
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inference", "--bundle_root", str(bundle),
        "--config_file", str(bundle / "configs" / "inference.json"), "--input", str(inputs), "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seg = nib.load(tmp_path / "out" / "a_seg.nii.gz")
    assert seg.shape == (30, 44, 12) and np.allclose(seg.affine, affine) and seg.get_data_dtype() == np.uint8
    assert set(np.unique(seg.get_fdata())) <= {0.0, 1.0}


def test_test_results_are_recorded_only_for_the_exported_weights(tmp_path):
    from crln_monai.workflow import record_test_results

    settings, teacher = _settings()
    export = export_bundle(tmp_path / "export", "run", teacher.state_dict(), settings, INFERENCE, results={})
    report = tmp_path / "eval"
    report.mkdir()
    stat = {"mean": 0.5, "std": 0.1, "case_mean": 0.5}
    summary = {"metrics": {m: stat for m in ("dice", "jaccard", "hd95_mm", "asd_mm")}, "num_cases": 3, "num_empty_predictions": 1}
    (report / "summary.json").write_text(json.dumps(summary))
    same, other = tmp_path / "same.pt", tmp_path / "other.pt"
    torch.save({"model": teacher.state_dict()}, same)
    torch.save({"model": {k: v + 1 if v.is_floating_point() else v for k, v in teacher.state_dict().items()}}, other)
    meta_before = (export / "configs" / "metadata.json").read_text()
    assert record_test_results(export, other, report) is False  # other weights: the export is left as it was
    assert (export / "configs" / "metadata.json").read_text() == meta_before
    assert record_test_results(export, same, report) is True
    meta = json.loads((export / "configs" / "metadata.json").read_text())
    assert meta["results"]["test"]["dice"] == {"mean": 0.5, "std": 0.1} and meta["results"]["test"]["num_cases"] == 3
    assert meta["eval_metrics"]["test_mean_dice"] == 0.5 and meta["results"]["test"]["checkpoint"] == "same.pt"
    assert (export / "docs" / "README.md").read_text().count("- test: dice 0.5000 ± 0.1000") == 1
    record_test_results(export, same, report)  # a second evaluation replaces the line
    assert (export / "docs" / "README.md").read_text().count("- test: ") == 1
