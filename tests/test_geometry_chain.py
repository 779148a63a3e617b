"""Train → evaluate → export → infer on data whose affine is not RAS: one geometry all the way.

The cases are stored with negated x and y steps (the voxel order of a DICOM-converted axial CT). Training and
evaluation reorient to RAS as inference does, and evaluation writes its predictions through the same inverse
as the exported bundle's inference, so both give the same label map, in the input's geometry.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow

from crln_monai.data import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
TINY = {
    "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2, "num_queries": 8, "num_negatives": 16,
    "num_labelled": 2, "labelled_batch_size": 1, "unlabelled_batch_size": 1, "max_epochs": 1, "epoch_length": 2,
    "rectify_start": 0, "num_workers": 0, "log_interval": 1, "device": "$torch.device('cpu')",
}  # fmt: skip


def _store_flipped_xy(path: Path) -> None:
    """Rewrite ``path`` with negated x/y steps: the same world content, the voxel order reversed in x and y."""
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [data.shape[0] - 1, data.shape[1] - 1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1, ::-1]), img.affine @ flip), path)


def _workflow(files, run_id, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=[str(f) for f in files], meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        run_id=run_id, **override,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    return wf


def test_non_ras_data_segments_identically_in_evaluation_and_in_the_exported_bundle(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=7, num_test=2, shape=(40, 36, 20))
    for path in sorted((data / "imagesTr").glob("*.nii.gz")) + sorted((data / "labelsTr").glob("*.nii.gz")):
        _store_flipped_xy(path)
    test_ids = json.loads((data / "dataset.json").read_text())["test_ids"]
    first = nib.load(data / "imagesTr" / f"{test_ids[0]}.nii.gz")
    assert nib.aff2axcodes(first.affine) == ("L", "P", "S")

    run = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(data), **TINY}
    _workflow([CONFIGS / "train.json"], "training", **run)
    _workflow([CONFIGS / "train.json", CONFIGS / "evaluate.json"], "evaluating", **run)
    (export,) = (tmp_path / "run" / "export").iterdir()
    meta = json.loads((export / "configs" / "metadata.json").read_text())  # the evaluated weights are the export's
    assert meta["results"]["test"]["num_cases"] == 2 and 0.0 <= meta["results"]["test"]["dice"]["mean"] <= 1.0
    assert "- test: dice " in (export / "docs" / "README.md").read_text()
    _workflow(
        [export / "configs" / "inference.json"], "inference", bundle_root=str(export),
        input=[str(data / "imagesTr" / f"{case}.nii.gz") for case in test_ids], output_dir=str(tmp_path / "out"),
    )  # fmt: skip

    for case in test_ids:
        source = nib.load(data / "imagesTr" / f"{case}.nii.gz")
        evaluated = nib.load(tmp_path / "run" / "eval" / "predictions" / f"{case}_seg.nii.gz")
        inferred = nib.load(tmp_path / "out" / f"{case}_seg.nii.gz")
        for seg in (evaluated, inferred):
            assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
        np.testing.assert_array_equal(np.asarray(evaluated.dataobj), np.asarray(inferred.dataobj))
        assert set(np.unique(np.asarray(inferred.dataobj))) <= {0, 1}
