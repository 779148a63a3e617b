"""Slice-overlay figures: the centroid slice is chosen correctly and the PNG is written."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from crln_monai.evaluation.figures import central_slices, plot_case_overlays


def _case(shape=(24, 20, 16), z_range=(9, 14)):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[5:15, 4:12, z_range[0] : z_range[1]] = 1
    pred = np.roll(label, 2, axis=0)
    return image, label, pred


def test_centroid_slice_of_the_reference():
    image, label, pred = _case(z_range=(9, 14))  # slices 9..13 → centroid 11
    cut = central_slices(image, label, pred)
    assert cut["index"] == 11 and not cut["empty_reference"]
    np.testing.assert_array_equal(cut["image"], image[:, :, 11])
    np.testing.assert_array_equal(cut["label"], label[:, :, 11] > 0)
    np.testing.assert_array_equal(cut["pred"], pred[:, :, 11] > 0)
    assert cut["label"].dtype == bool and cut["image"].shape == (24, 20)


def test_centroid_is_weighted_by_voxel_count_and_accepts_channel_first_tensors():
    image, label, pred = _case()
    label[:] = 0
    label[0:2, 0:2, 2] = 1  # 4 voxels at z = 2
    label[0:2, 0:2, 12] = 1  # 4 voxels at z = 12
    label[2:4, 0:2, 12] = 1  # 4 more at z = 12 → mean z = (4*2 + 8*12) / 12 = 8.67 → 9
    cut = central_slices(torch.from_numpy(image)[None], torch.from_numpy(label)[None], torch.from_numpy(pred)[None])
    assert cut["index"] == 9
    # the evaluator hands MetaTensors (C, H, W, D)
    cut = central_slices(MetaTensor(torch.from_numpy(image)[None]), MetaTensor(torch.from_numpy(label)[None]), pred)
    assert cut["index"] == 9 and isinstance(cut["image"], np.ndarray)


def test_empty_reference_gives_the_middle_slice():
    image, label, pred = _case(shape=(8, 8, 7))
    cut = central_slices(image, np.zeros_like(label), pred)
    assert cut["index"] == 3 and cut["empty_reference"]
    assert not cut["label"].any()


def test_shape_mismatch_is_rejected():
    image, label, pred = _case()
    with pytest.raises(ValueError, match="share the spatial shape"):
        central_slices(image, label[:-1], pred)
    with pytest.raises(ValueError, match=r"\(H, W, D\)"):
        central_slices(image[..., 0], label, pred)


def test_overlay_png_is_written(tmp_path):
    image, label, pred = _case()
    best = {"case": "best", "dice": 0.9, **central_slices(image, label, label)}
    # 3-D volumes are cut by plot_case_overlays itself; an empty prediction draws no contour
    worst = {"case": "worst", "dice": 0.1, "image": image, "label": label, "pred": np.zeros_like(pred)}
    out = plot_case_overlays([best, worst], tmp_path / "figs" / "overlay.png", title="best and worst")
    data = out.read_bytes()
    assert out == tmp_path / "figs" / "overlay.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # two rows of 3 panels at 100 dpi: 900 x 600 pixels (PNG IHDR: width, height at bytes 16..24)
    assert int.from_bytes(data[16:20], "big") == 900 and int.from_bytes(data[20:24], "big") == 600


def test_overlay_rejects_bad_entries(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plot_case_overlays([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks keys"):
        plot_case_overlays([{"case": "a", "image": np.zeros((4, 4))}], tmp_path / "x.png")
