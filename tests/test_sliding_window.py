"""UA-MT window placement and softmax averaging through MONAI's SlidingWindowInferer."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crln_monai.evaluation.sliding_window import (
    UAMTSlidingWindowInferer,
    overlap_for_stride,
    sliding_window_softmax,
    window_starts,
)


def test_window_starts_hand_values():
    # LA axis 0: ceil((200 - 112)/18) + 1 = 6 windows, last one clamped to 200 - 112 = 88.
    assert window_starts(200, 112, 18) == [0, 18, 36, 54, 72, 88]
    assert window_starts(88, 80, 4) == [0, 4, 8]
    assert window_starts(112, 112, 18) == [0]
    assert window_starts(100, 112, 18) == [0]  # padded frame
    assert window_starts(130, 96, 16) == [0, 16, 32, 34]
    with pytest.raises(ValueError, match="stride"):
        window_starts(100, 96, 0)


def test_overlap_for_stride_is_exact_for_all_small_settings():
    for patch in range(1, 200):
        overlaps = overlap_for_stride([patch] * patch, list(range(1, patch + 1)))
        for stride, overlap in zip(range(1, patch + 1), overlaps):
            assert 0.0 <= overlap < 1.0
            assert int(patch * (1 - overlap)) == stride, (patch, stride)
    # The naive 1 - stride/patch truncates 96/16 to 15 (MONAI's stride is int(roi * (1 - overlap))); ours does not.
    assert int(96 * (1 - (1 - 16 / 96))) == 15
    assert overlap_for_stride([112, 112, 80], [18, 18, 4]) == pytest.approx([0.834821, 0.834821, 0.94375], abs=1e-6)
    with pytest.raises(ValueError, match="stride"):
        overlap_for_stride([96], [97])
    with pytest.raises(ValueError, match="same length"):
        overlap_for_stride([96, 96], [16])


class _WindowRecorder:
    """Fake network: reads each window's start off coordinate channels and returns zero logits.

    Channel ``a`` of the input holds ``index along axis a + 1`` (0 in MONAI's zero padding), so along a
    line through the window centre the first non-zero voxel ``j0`` with value ``v`` gives the window's
    start in the original frame: ``v - 1 - j0``.
    """

    def __init__(self) -> None:
        self.starts: list[tuple[int, ...]] = []

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        n, _, *patch = windows.shape
        centre = [p // 2 for p in patch]
        for w in windows:
            start = []
            for axis in range(3):
                index: list = list(centre)
                index[axis] = slice(None)
                line = w[axis][tuple(index)]
                j0 = int(torch.nonzero(line)[0])
                start.append(int(line[j0]) - 1 - j0)
            self.starts.append(tuple(start))
        return torch.zeros(n, 2, *patch)


def _coordinate_volume(size: tuple[int, int, int]) -> torch.Tensor:
    grids = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) + 1 for s in size), indexing="ij")
    return torch.stack(grids)[None]  # (1, 3, H, W, D)


@pytest.mark.parametrize(
    ("size", "patch", "stride"),
    [
        ((200, 150, 88), (112, 112, 80), (18, 18, 4)),
        ((144, 144, 96), (112, 112, 80), (18, 18, 4)),
        ((112, 112, 80), (112, 112, 80), (18, 18, 4)),
        ((100, 120, 70), (112, 112, 80), (18, 18, 4)),
        ((130, 150, 96), (96, 96, 96), (16, 16, 16)),
        ((96, 96, 96), (96, 96, 96), (16, 16, 16)),
        ((80, 100, 120), (96, 96, 96), (16, 16, 16)),
    ],
)
def test_monai_window_starts_equal_uamt_tiler(size, patch, stride):
    recorder = _WindowRecorder()
    inferer = UAMTSlidingWindowInferer(patch, stride, sw_batch_size=16)
    with torch.no_grad():
        out = inferer(_coordinate_volume(size), recorder)
    # Expected starts, converted from the padded frame to the original one.
    per_axis = [
        [s - max(p - n, 0) // 2 for s in window_starts(n, p, st)] for n, p, st in zip(size, patch, stride)
    ]
    expected = sorted(itertools.product(*per_axis))
    assert sorted(recorder.starts) == expected
    assert len(recorder.starts) == math.prod(len(a) for a in per_axis)
    assert out.shape == (1, 2, *size)
    assert torch.allclose(out, torch.full_like(out, 0.5))  # softmax of zero logits
    if size == (144, 144, 96):
        assert len(recorder.starts) == 45  # 3 × 3 × 5 windows of 112×112×80 at stride (18, 18, 4)


def _manual_uamt(net: nn.Module, image: torch.Tensor, patch, stride) -> torch.Tensor:
    """The UA-MT test loop written out: pad, explicit for-loops over starts, sum softmax, divide, crop."""
    size = image.shape[2:]
    pads = [max(p - s, 0) for s, p in zip(size, patch)]
    before = [d // 2 for d in pads]
    pad_arg = []
    for d, b in reversed(list(zip(pads, before))):
        pad_arg += [b, d - b]
    padded = F.pad(image, pad_arg)
    shape = padded.shape[2:]
    score = torch.zeros(image.shape[0], 2, *shape)
    count = torch.zeros(1, 1, *shape)
    for x in window_starts(size[0], patch[0], stride[0]):
        for y in window_starts(size[1], patch[1], stride[1]):
            for z in window_starts(size[2], patch[2], stride[2]):
                window = padded[:, :, x : x + patch[0], y : y + patch[1], z : z + patch[2]]
                score[:, :, x : x + patch[0], y : y + patch[1], z : z + patch[2]] += torch.softmax(net(window), dim=1)
                count[:, :, x : x + patch[0], y : y + patch[1], z : z + patch[2]] += 1
    score = score / count
    crop = tuple(slice(b, b + s) for b, s in zip(before, size))
    return score[(slice(None), slice(None), *crop)]


@pytest.mark.parametrize("size", [(40, 36, 20), (28, 36, 12)])  # the second is smaller than the patch in 2 axes
def test_averaged_softmax_equals_manual_uamt_loop(size):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1)).eval()
    image = torch.rand(2, 1, *size)
    patch, stride = (32, 32, 16), (6, 6, 4)
    with torch.no_grad():
        expected = _manual_uamt(net, image, patch, stride)
        for sw_batch_size in (1, 4, 7):
            got = UAMTSlidingWindowInferer(patch, stride, sw_batch_size=sw_batch_size)(image, net)
            assert got.shape == (2, 2, *size)
            assert torch.allclose(got, expected, atol=1e-6)
        assert torch.allclose(sliding_window_softmax(image, net, patch, stride), expected, atol=1e-6)
        # Averaging logits instead (softmax=False) is a different result: the softmax matters.
        logits_avg = UAMTSlidingWindowInferer(patch, stride, softmax=False)(image, net)
        assert not torch.allclose(torch.softmax(logits_avg, dim=1), expected, atol=1e-6)
        # bfloat16 autocast on CPU runs and stays close.
        amp = UAMTSlidingWindowInferer(patch, stride, amp_dtype="bfloat16")(image, net)
        assert amp.dtype == torch.float32
        assert torch.allclose(amp, expected, atol=2e-2)


def test_inferer_from_bundle_config_and_errors():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "inferer": {
                "_target_": "crln_monai.evaluation.sliding_window.UAMTSlidingWindowInferer",
                "patch_size": [32, 32, 16],
                "stride": [6, 6, 4],
                "sw_batch_size": 2,
            }
        }
    )
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, UAMTSlidingWindowInferer)
    assert inferer.overlap == pytest.approx(overlap_for_stride([32, 32, 16], [6, 6, 4]))
    with pytest.raises(ValueError, match="inputs must be"):
        inferer(torch.zeros(1, 32, 32, 16), lambda x: x)
    with pytest.raises(TypeError, match="one logits tensor"):
        inferer(torch.zeros(1, 1, 32, 32, 16), lambda x: (x, x))
    with pytest.raises(ValueError, match="amp_dtype"):
        UAMTSlidingWindowInferer([32, 32, 16], [6, 6, 4], amp_dtype="int8")


def test_recorder_detects_naive_overlap_stride():
    # Guard for the placement test: with MONAI's overlap = 1 - 16/96 the stride becomes 15, and the
    # recorded starts no longer equal the UA-MT tiler's.
    from monai.inferers import SlidingWindowInferer

    recorder = _WindowRecorder()
    naive = SlidingWindowInferer((96, 96, 96), sw_batch_size=8, overlap=1 - 16 / 96, mode="constant")
    with torch.no_grad():
        naive(_coordinate_volume((130, 96, 96)), recorder)
    assert sorted({s[0] for s in recorder.starts}) == [0, 15, 30, 34]
    assert sorted({s[0] for s in recorder.starts}) != window_starts(130, 96, 16)


def test_validation_and_evaluation_inferers_take_the_runs_amp_dtype():
    """--amp_dtype reaches the validation and test-set sliding windows too (it once sped up training only)."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    configs = Path(__file__).resolve().parents[1] / "bundles" / "la" / "configs"
    for amp_dtype, expected in (("bfloat16", torch.bfloat16), (None, None)):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
        parser["amp_dtype"] = amp_dtype
        inferer = parser.get_parsed_content("validate::inferer")
        assert inferer.amp_dtype == expected
        assert parser["test"]["evaluator"]["inferer"] == "@validate::inferer"
