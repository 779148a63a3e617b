"""The slice-wise (2-D) configuration: the 2-D U-Net, CRLN on slices, CPS and the losses on 2-D outputs, slice
sampling from 3-D volumes and slice-by-slice sliding-window inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crln_monai.data import semi_supervised_train_transforms
from crln_monai.evaluation import UAMTSlidingWindowInferer
from crln_monai.losses import CPSLoss, PseudoLabelLoss, SegmentationLoss
from crln_monai.networks import CRLN, RectifiedPrediction, Rectifier, UNet2D
from crln_monai.networks.backbone import planar_settings


def _block(i: int, o: int) -> int:
    """Parameters of a conv block: two 3² convs with bias and two BatchNorms."""
    return 9 * i * o + o + 2 * o + 9 * o * o + o + 2 * o


def test_unet2d_parameter_count_by_hand():
    widths = [16, 32, 64, 128, 256]
    encoder = _block(1, 16) + sum(_block(widths[i - 1], widths[i]) for i in range(1, 5))
    decoder = sum(widths[i + 1] * widths[i] + widths[i] + _block(2 * widths[i], widths[i]) for i in range(4))
    head = 16 * 2 + 2
    net = UNet2D(in_channels=1, num_classes=2)
    assert sum(p.numel() for p in net.parameters()) == encoder + decoder + head == 1_813_218


@pytest.mark.parametrize("size", [(32, 48), (64, 64)])
def test_unet2d_logits_and_taps(size):
    net = UNet2D(in_channels=2, num_classes=3).eval()
    logits, taps = net(torch.randn(2, 2, *size))
    h, w = size
    assert logits.shape == (2, 3, h, w)
    assert [tuple(t.shape) for t in taps] == [(2, 64, h // 4, w // 4), (2, 32, h // 2, w // 2), (2, 16, h, w)]
    assert net.feature_channels == (64, 32, 16) and net.size_divisor == (16, 16) and net.spatial_dims == 2
    assert torch.allclose(logits, net.head(taps[2]))


def test_unet2d_checks_its_input():
    net = UNet2D()
    with pytest.raises(ValueError, match=r"input must be a 4-D tensor \(B, C, H, W\)"):
        net(torch.zeros(1, 1, 32, 32, 1))
    with pytest.raises(ValueError, match=r"size 40 on axis 1 \(W\), which is not divisible by 16"):
        net(torch.zeros(1, 1, 32, 40))
    with pytest.raises(ValueError, match=r"strides\[1\] must be 1, 2 or 2 of them \(H, W\)"):
        UNet2D(strides=[2, [2, 2, 2], 2, 2])


def test_unet2d_dropout_schedule_and_train_mode():
    net = UNet2D(dropout=0.5)
    rates = [block[3].p for block in net.encoder]
    assert rates == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.5])
    assert [block[3].p for block in UNet2D(dropout=0.0).encoder] == [0.0] * 5
    x = torch.randn(2, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x).logits, net(x).logits)
    net.eval()
    assert torch.equal(net(x).logits, net(x).logits)


def test_planar_settings_take_the_bundles_three_axis_terms():
    assert planar_settings([64, 48, 1], None, 4, "X") == ((64, 48), ((2, 2),) * 4)
    assert planar_settings([64, 48], [[2, 2, 1], [2, 1, 1], 2, [1, 2]], 4, "X")[1] == ((2, 2), (2, 1), (2, 2), (1, 2))
    with pytest.raises(ValueError, match=r"patch_size must be \[h, w, 1\].*got \[64, 48, 8\]"):
        planar_settings([64, 48, 8], None, 4, "X")
    with pytest.raises(ValueError, match=r"strides\[0\] = \[2, 2, 2\] pools the slice axis"):
        planar_settings([64, 48, 1], [[2, 2, 2], 2, 2, 2], 4, "X")


def _crln2d(**kwargs) -> CRLN:
    torch.manual_seed(0)
    kwargs.setdefault("patch_size", [32, 32, 1])
    kwargs.setdefault("num_prototypes", 4)
    return CRLN(in_channels=1, num_classes=3, backbone="unet2d", **kwargs)


def test_crln_on_slices_and_on_one_slice_volumes():
    """A 2-D CRLN takes (B, C, H, W) slices and (B, C, H, W, 1) one-slice patches and answers in the same layout,
    with the same numbers; a thicker patch is refused."""
    net = _crln2d().eval()
    assert net.spatial_dims == 2 and net.patch_size == (32, 32, 1)
    assert net.dim.spatial_dims == 2 and net.dim.patch_size == (32, 32)
    x = torch.randn(2, 1, 32, 32)
    planar, volumetric = net(x), net(x.unsqueeze(-1))
    for a, b, channels in zip(planar, volumetric, (3, 3, 3, 4)):
        assert a.shape == (2, channels, 32, 32) and b.shape == (2, channels, 32, 32, 1)
        assert torch.equal(a, b[..., 0])
    with pytest.raises(ValueError, match=r"one slice at a time .* \(2, 1, 32, 32, 2\)"):
        net(torch.randn(2, 1, 32, 32, 2))
    with pytest.raises(ValueError, match=r"patch_size must be \[h, w, 1\]"):
        CRLN(backbone="unet2d", patch_size=[32, 32, 16])
    assert not any(isinstance(m, torch.nn.Conv3d) for m in net.modules() if m is not net.rectifier)


def test_gradients_through_dim_cps_and_losses_in_two_dimensions():
    """One student step on slices: the supervised loss on logits and on the relation map, the pseudo-label loss and
    CPS (with the teacher's prototypes) all reach the backbone, the DIM's prototypes and the projection head."""
    net = _crln2d().train()
    image = torch.randn(4, 1, 32, 32, 1)
    label = torch.randint(0, 3, (4, 1, 32, 32, 1))
    out = net(image)
    seg = SegmentationLoss()
    loss = seg(out.logits, label) + seg(out.relation_map, label)
    loss = loss + PseudoLabelLoss()(out.logits, label[:, 0], torch.rand(4, 32, 32, 1))
    probs = torch.softmax(out.logits.detach(), 1)
    cps = CPSLoss(num_queries=16, num_negatives=32)(
        out.embedding, label[:, 0], torch.ones(4, 32, 32, 1, dtype=torch.bool), probs, net.prototypes.detach(),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.isfinite(cps) and cps > 0
    (loss + cps).backward()
    assert net.dim.prototypes.grad.abs().sum() > 0
    assert net.projection[0].weight.grad.abs().sum() > 0
    assert net.backbone.encoder[0][0].weight.grad.abs().sum() > 0
    # CPS alone on a 4-D embedding, too
    embedding = torch.randn(2, 4, 16, 16, requires_grad=True)
    value = CPSLoss(num_queries=8, num_negatives=16)(
        embedding, torch.randint(0, 3, (2, 16, 16)), torch.ones(2, 16, 16, dtype=torch.bool),
        torch.softmax(torch.randn(2, 3, 16, 16), 1), generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    value.backward()
    assert embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["learnable_v3", "fixed_v1", "learnable_v2"])
def test_rectifier_on_slices(mode):
    rectifier = Rectifier(mode=mode, num_classes=3)
    logits, relation = torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    planar = rectifier(logits, relation)
    assert planar.shape == (2, 3, 8, 8)
    assert torch.equal(planar, rectifier(logits.unsqueeze(-1), relation.unsqueeze(-1))[..., 0])
    with pytest.raises(ValueError, match="must both have shape"):
        rectifier(logits[0], relation[0])


def test_slices_are_sampled_from_volumes_and_foreground_slices_when_asked(tmp_path):
    """A one-slice patch [h, w, 1] crops one slice of a 3-D volume (image and label the same slice); with
    foreground_share 1 every labelled crop is a slice holding foreground, and uniform crops visit the others."""
    import nibabel as nib

    shape = (40, 36, 6)
    label = np.zeros(shape, np.uint8)
    label[12:24, 10:20, 2:4] = 1
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32) + 3 * label
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "image.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "label.nii.gz"))
    item = {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz"), "case": "a"}

    def crops(share: float) -> list[dict]:
        pipeline = semi_supervised_train_transforms(
            [32, 32, 1], num_classes=2, foreground_share=share, rotate_flip=False, brightness=False, normalise="none"
        )
        pipeline.set_random_state(seed=0)
        return [pipeline(dict(item)) for _ in range(16)]

    for out in crops(1.0):
        assert out["image"].shape == (1, 32, 32, 1) and out["label"].shape == (1, 32, 32, 1)
        assert out["label"].sum() > 0  # a foreground slice
        assert out["image"][out["label"] > 0].mean() > 2  # image and label come from the same slice
    uniform = crops(0.0)
    assert any(out["label"].sum() == 0 for out in uniform)  # slices without the object are drawn too
    assert all(out["image"].shape == (1, 32, 32, 1) for out in uniform)


def test_slice_by_slice_sliding_window_keeps_the_volume():
    """Inference of a 2-D network over a volume: windows of one slice, batched; the output has the volume's shape
    and every slice is the network's own prediction for that slice."""
    net = _crln2d(patch_size=[16, 16, 1]).eval()
    predictor = RectifiedPrediction(net)
    volume = torch.randn(1, 1, 16, 16, 5)
    inferer = UAMTSlidingWindowInferer(patch_size=[16, 16, 1], stride=[8, 8, 1], sw_batch_size=5)
    with torch.no_grad():
        probabilities = inferer(volume, predictor)
        assert probabilities.shape == (1, 3, 16, 16, 5)
        for z in range(5):
            expected = torch.softmax(predictor(volume[..., z]), 1)
            assert torch.allclose(probabilities[..., z], expected, atol=1e-5)
