"""inference.json (layered on train.json): NIfTI files with an anisotropic, non-identity affine in, label maps with
the same geometry out."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from crln_monai.data import nifti_files
from crln_monai.networks import CRLN

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "la"
PATCH = [32, 32, 16]


def _affine():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # not RAS: inverted on the way out
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return affine


@pytest.mark.slow
def test_inference_writes_label_maps_with_each_inputs_geometry(tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shapes = [(40, 36, 20), (30, 44, 12)]  # the second is smaller than the patch along two axes
    for i, shape in enumerate(shapes):
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), _affine()), inputs / f"case{i}.nii.gz")
    ckpt = tmp_path / "model.pt"
    torch.save(CRLN(patch_size=PATCH, num_prototypes=2).state_dict(), ckpt)  # as training saves it, projection included
    configs = f"['{BUNDLE / 'configs' / 'train.json'}','{BUNDLE / 'configs' / 'inference.json'}']"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", configs,
        "--bundle_root", str(BUNDLE), "--input", str(inputs), "--output_dir", str(tmp_path / "out"), "--ckpt_path", str(ckpt),
        "--patch_size", "[32,32,16]", "--sw_stride", "[16,16,8]", "--num_prototypes", "2",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for i, shape in enumerate(shapes):
        out = nib.load(tmp_path / "out" / f"case{i}_seg.nii.gz")
        assert out.shape == shape
        np.testing.assert_allclose(out.affine, _affine(), atol=1e-5)
        assert out.get_data_dtype() == np.uint8 and set(np.unique(out.get_fdata())) <= {0.0, 1.0}


def test_nifti_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no NIfTI files"):
        nifti_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        nifti_files([tmp_path / "missing.nii.gz"])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="not NIfTI"):
        nifti_files([tmp_path / "a.txt"])
    (tmp_path / "b.nii.gz").write_bytes(b"")
    assert nifti_files(tmp_path) == [str(tmp_path / "b.nii.gz")]
    assert nifti_files([tmp_path]) == [str(tmp_path / "b.nii.gz")]  # a folder in a list: its NIfTI files


def test_torchscript_export_and_net_in_out(tmp_path):
    from monai.bundle import ckpt_export, verify_net_in_out

    configs = BUNDLE / "configs"
    net = CRLN(patch_size=PATCH, num_prototypes=2, use_projection=False).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    common = {"meta_file": str(configs / "metadata.json"), "config_file": [str(configs / "train.json"), str(configs / "inference.json")]}
    overrides = {"bundle_root": str(BUNDLE), "patch_size": PATCH, "num_prototypes": 2, "use_cps": False, "device": "cpu"}
    ckpt_export(
        net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(tmp_path / "model.pt"),
        use_trace=True, input_shape=[1, 1, *PATCH], **common, **overrides,
    )  # fmt: skip
    exported = torch.jit.load(tmp_path / "model.ts")
    x = torch.rand(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.allclose(exported(x), net(x, with_embedding=False).rectified_logits, atol=1e-5)
    verify_net_in_out(net_id="network_def", **common, bundle_root=str(BUNDLE))
