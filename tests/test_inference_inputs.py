"""Inference inputs and outputs in the library: cases from files (nnU-Net channels grouped), one output per case, no
output over an input or a file this package did not write, and label maps written with their input's geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from crln_monai.data import SEGMENTATION_DESCRIPTION, inference_inputs, is_segmentation, nifti_files
from crln_monai.evaluation.postprocessing import write_label_map

AFFINE = np.diag([0.7, 0.7, 2.0, 1.0])


def _image(path, shape=(6, 5, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), AFFINE), str(path))
    return str(path)


def _ours(path):
    return str(write_label_map(np.zeros((1, 6, 5, 4), np.uint8), path, {"affine": AFFINE}))


def test_nnunet_channel_files_are_grouped_into_cases(tmp_path):
    files = [_image(tmp_path / f"{case}_{c:04d}.nii.gz") for case in ("a", "b") for c in (0, 1)]
    assert inference_inputs(tmp_path, tmp_path / "out", 2) == [
        {"image": files[:2], "case": "a"}, {"image": files[2:], "case": "b"}
    ]
    single = tmp_path / "single"
    one = _image(single / "x_0000.nii.gz")
    assert inference_inputs(single, tmp_path / "out", 1) == [{"image": one, "case": "x"}]  # nnU-Net's 1 channel


def test_names_that_only_look_like_channels_stay_separate_for_one_channel(tmp_path):
    files = [_image(tmp_path / "scan_2019.nii.gz"), _image(tmp_path / "scan_2020.nii.gz")]
    cases = inference_inputs(tmp_path, tmp_path / "out", 1)
    assert cases == [{"image": files[0], "case": "scan_2019"}, {"image": files[1], "case": "scan_2020"}]
    with pytest.raises(ValueError, match=r"input case 'scan' has the channel files scan_2019\.nii\.gz, "
                                         r"scan_2020\.nii\.gz \(channels \[2019, 2020\]\); expected scan_0000 \.\. "
                                         r"scan_0001 \(nnU-Net naming, in_channels=2\)"):  # fmt: skip
        inference_inputs(tmp_path, tmp_path / "out", 2)


def test_one_output_per_case_name(tmp_path):
    first, second = _image(tmp_path / "p1" / "scan.nii.gz"), _image(tmp_path / "p2" / "scan.nii.gz")
    message = rf"inputs {first} and {second} are both case 'scan' and would both be written to .*scan_seg\.nii\.gz"
    with pytest.raises(ValueError, match=message):
        inference_inputs([tmp_path / "p1", tmp_path / "p2"], tmp_path / "out")
    _image(tmp_path / "p3" / "b_0000.nii")
    _image(tmp_path / "p3" / "b_0000.nii.gz")
    with pytest.raises(ValueError, match=r"b_0000\.nii and .*b_0000\.nii\.gz are both case 'b'"):
        inference_inputs(tmp_path / "p3", tmp_path / "out")
    plain, packed = _image(tmp_path / "p4" / "a.nii"), _image(tmp_path / "p4" / "a.nii.gz")  # names differ in the ending
    single = _image(tmp_path / "p4" / "c.nii.gz")
    assert inference_inputs(tmp_path / "p4", tmp_path / "out") == [
        {"image": plain, "case": "a_nii"}, {"image": packed, "case": "a_nii_gz"}, {"image": single, "case": "c"}
    ]  # fmt: skip


def test_hidden_files_are_left_out(tmp_path):
    kept = _image(tmp_path / "a.nii.gz")
    (tmp_path / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    (tmp_path / ".a_seg.nii.gz.123.tmp.nii.gz").write_bytes(b"")  # a writer's temporary file
    assert nifti_files(tmp_path) == [kept]


def test_label_maps_of_ours_are_never_inputs_and_other_files_never_overwritten(tmp_path):
    image = _image(tmp_path / "a.nii.gz")
    ours = _ours(tmp_path / "a_seg.nii.gz")
    assert is_segmentation(ours) and not is_segmentation(image) and not is_segmentation(tmp_path / "missing.nii")
    assert inference_inputs(tmp_path, tmp_path) == [{"image": image, "case": "a"}]  # its own output replaced later
    with pytest.raises(ValueError, match=r"input .*a_seg\.nii\.gz is a label map written by crln-monai"):
        inference_inputs(ours, tmp_path / "out")
    only = tmp_path / "only"
    _ours(only / "b_seg.nii.gz")
    message = r"no images in input folder .*only: its 1 NIfTI file\(s\) \(b_seg\.nii\.gz\) are label maps written by"
    with pytest.raises(FileNotFoundError, match=message):
        inference_inputs(only, tmp_path / "out")
    out = tmp_path / "out"
    _image(out / "a_seg.nii.gz")  # someone's own segmentation, not marked
    with pytest.raises(ValueError, match=r"output .*out/a_seg\.nii\.gz of input .*a\.nii\.gz exists and was not "
                                         r"written by crln-monai"):  # fmt: skip
        inference_inputs(image, out)


def test_label_maps_keep_every_axis_and_the_affine(tmp_path):
    permuted = np.array([[0, 0.625, 0, 3], [0, 0, 0.625, -2], [0.625, 0, 0, 1], [0, 0, 0, 1]])  # (z, x, y) storage
    for shape in [(1, 1, 1), (32, 32, 1), (7, 6, 5)]:
        values = torch.randint(0, 3, (1, *shape))
        path = write_label_map(MetaTensor(values, affine=torch.tensor(permuted)), tmp_path / f"{shape[0]}_seg.nii.gz")
        written = nib.load(path)
        assert written.shape == shape and np.allclose(written.affine, permuted)
        assert np.array_equal(np.asarray(written.dataobj), values[0].numpy()) and written.get_data_dtype() == np.uint8
        assert written.header["descrip"].item().decode() == SEGMENTATION_DESCRIPTION
        assert written.header["intent_code"] == 1002  # NIfTI's label intent
    many = write_label_map(np.full((1, 2, 2, 2), 300), tmp_path / "many_seg.nii.gz", {"affine": AFFINE})
    assert nib.load(many).get_data_dtype() == np.uint16 and np.asarray(nib.load(many).dataobj).max() == 300
    assert not list(tmp_path.glob(".*tmp*"))
