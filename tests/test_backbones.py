"""Tests of the two CRLN backbones: the UA-MT VNet and the SSL4MIS-style 3D U-Net."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crln_monai.networks.backbone import BackboneOutput
from crln_monai.networks.unet3d import UNet3D
from crln_monai.networks.vnet import VNet

BACKBONES = [VNet, UNet3D]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _first_conv(model: nn.Module) -> nn.Conv3d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv3d))


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize("size", [(112, 112, 80), (96, 96, 96), (64, 64, 64)], ids=str)
def test_logits_and_tap_shapes(backbone, size):
    torch.manual_seed(0)
    model = backbone().eval()
    h, w, d = size
    with torch.no_grad():
        out = model(torch.randn(1, 1, h, w, d))
    assert isinstance(out, BackboneOutput)
    assert out.logits.shape == (1, 2, h, w, d)
    assert [tuple(f.shape) for f in out.features] == [
        (1, 64, h // 4, w // 4, d // 4),
        (1, 32, h // 2, w // 2, d // 2),
        (1, 16, h, w, d),
    ]
    assert model.feature_channels == (64, 32, 16)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_multichannel_input_and_classes(backbone):
    torch.manual_seed(0)
    model = backbone(in_channels=4, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, 32, 32, 16))
    assert out.logits.shape == (2, 3, 32, 32, 16)
    assert [f.shape[1] for f in out.features] == [64, 32, 16]


def test_vnet_width_scales_taps():
    model = VNet(base_filters=8).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32, 32))
    assert model.feature_channels == (32, 16, 8)
    assert [f.shape[1] for f in out.features] == [32, 16, 8]


def test_vnet_parameter_count_matches_ua_mt():
    # Hand count for in_channels=1, num_classes=2, n=16 (all convs have bias; BN has weight+bias = 2c;
    # running stats are buffers). k³ conv i→o: k³·i·o + o.
    #   block1  3³ 1→16 + BN                       :       432+16+32 =       480
    #   down1   2³ 16→32 + BN                      :     4096+32+64  =     4,192
    #   block2  2×(3³ 32→32 + BN)                  : 2×(27,648+32+64)=    55,488
    #   down2   2³ 32→64 + BN                      :   16,384+64+128 =    16,576
    #   block3  3×(3³ 64→64 + BN)                  : 3×110,784       =   332,352
    #   down3   2³ 64→128 + BN                     :  65,536+128+256 =    65,920
    #   block4  3×(3³ 128→128 + BN)                : 3×442,752       = 1,328,256
    #   down4   2³ 128→256 + BN                    : 262,144+256+512 =   262,912
    #   block5  3×(3³ 256→256 + BN)                : 3×1,770,240     = 5,310,720
    #   up5     2³ᵀ 256→128 + BN                   : 262,144+128+256 =   262,528
    #   block6  3×(3³ 128→128 + BN)                :                   1,328,256
    #   up6     2³ᵀ 128→64 + BN                    :  65,536+64+128  =    65,728
    #   block7  3×(3³ 64→64 + BN)                  :                     332,352
    #   up7     2³ᵀ 64→32 + BN                     :  16,384+32+64   =    16,480
    #   block8  2×(3³ 32→32 + BN)                  :                      55,488
    #   up8     2³ᵀ 32→16 + BN                     :   4,096+16+32   =     4,144
    #   block9  3³ 16→16 + BN                      :   6,912+16+32   =     6,960
    #   head    1³ 16→2                            :      32+2       =        34
    #   total                                                        = 9,448,866  (UA-MT's "9.45 M")
    assert _num_params(VNet(in_channels=1, num_classes=2, base_filters=16)) == 9_448_866


def test_unet3d_parameter_count():
    # Conv unit i→o: (27·i·o + o) + (27·o·o + o) (InstanceNorm has no parameters).
    # Up block i→o: transposed 3³ i→i (27·i² + i) + BN(i) (2i) + conv unit (i+o)→o.
    #   conv1..center: 7,376 + 41,536 + 166,016 + 663,808 + 2,654,720 = 3,533,456
    #   up4..up1:      3,539,968 + 885,248 + 221,440 + 55,424          = 4,702,080
    #   head 1³ 16→2:  34                                     total   = 8,235,570
    assert _num_params(UNet3D(in_channels=1, num_classes=2, feature_scale=4)) == 8_235_570


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 40, 32, 32), (1, 1, 32, 32, 20)], ids=str)
def test_non_divisible_input_raises_with_shape(backbone, shape):
    model = backbone().eval()
    with pytest.raises(ValueError, match=r"divisible by 16") as info:
        model(torch.zeros(shape))
    assert str(tuple(shape[2:])) in str(info.value)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_bad_input_rank_and_channels_raise(backbone):
    model = backbone(in_channels=2).eval()
    with pytest.raises(ValueError, match="5-D"):
        model(torch.zeros(2, 32, 32, 32))
    with pytest.raises(ValueError, match="expected 2"):
        model(torch.zeros(1, 3, 32, 32, 32))


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: VNet(in_channels=0), "in_channels"),
        (lambda: VNet(num_classes=1.5), "num_classes"),
        (lambda: VNet(dropout=1.5), "dropout"),
        (lambda: VNet(norm="group"), "norm"),
        (lambda: UNet3D(feature_scale=3), "feature_scale"),
        (lambda: UNet3D(dropout=-0.1), "dropout"),
    ],
)
def test_bad_constructor_arguments_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_vnet_other_norms(norm):
    model = VNet(norm=norm).eval()
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert any(isinstance(m, nn.InstanceNorm3d) for m in model.modules()) == (norm == "instance")
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32, 32))
    assert out.logits.shape == (1, 2, 32, 32, 32)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_dropout_active_in_train_only(backbone):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32, 16)
    model = backbone()
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x).logits, model(x).logits)
        model.train()
        assert not torch.allclose(model(x).logits, model(x).logits)
        # Control: without dropout, train mode (BN batch statistics) is deterministic too.
        no_drop = backbone(dropout=0.0).train()
        assert torch.equal(no_drop(x).logits, no_drop(x).logits)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_full_resolution_tap_is_after_dropout_and_feeds_head(backbone):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32, 16)
    model = backbone().train()
    model.bottleneck_dropout.p = 0.0  # isolate the last dropout
    with torch.no_grad():
        model.feature_dropout.p = 0.0
        reference = model(x).features[2]
        model.feature_dropout.p = 0.5
        out = model(x)
    tap = out.features[2]
    kept = tap != 0
    # Dropout zeroes some activations that were non-zero and scales the survivors by 1 / (1 - p) = 2.
    assert ((reference != 0) & ~kept).any()
    torch.testing.assert_close(tap[kept], 2 * reference[kept])
    torch.testing.assert_close(out.logits, model.head(tap))


def test_vnet_dropout_is_channelwise():
    torch.manual_seed(0)
    model = VNet().train()
    with torch.no_grad():
        tap = model(torch.randn(1, 1, 32, 32, 32)).features[2]
    zero_channels = (tap == 0).flatten(2).all(-1)
    assert 0 < int(zero_channels.sum()) < 16  # Dropout3d drops whole channels


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_gradient_reaches_first_conv(backbone):
    torch.manual_seed(0)
    model = backbone().train()
    out = model(torch.randn(2, 1, 32, 32, 32))
    out.logits.square().mean().backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_initialisation(backbone):
    torch.manual_seed(0)
    model = backbone()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    # Kaiming-normal (fan_in, gain √2): std = √(2 / fan_in); for block5/center convs fan_in is large
    # enough that the sample std is within a few percent.
    big = max((m for m in model.modules() if isinstance(m, nn.Conv3d)), key=lambda m: m.weight.numel())
    fan_in = big.weight[0].numel()
    assert big.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)


# --- per-axis strides (anisotropic backbones) and MONAI's out_channels name -------------------------------------

THICK_SLICES = [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]]  # total stride (16, 16, 2)


def _small(backbone, **kwargs):
    """A narrow backbone (widths 8…128) so the CPU tests stay fast."""
    width = {"base_filters": 8} if backbone is VNet else {"feature_scale": 8}
    return backbone(**width, **kwargs)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_anisotropic_strides_shapes_and_gradient(backbone):
    torch.manual_seed(0)
    model = _small(backbone, strides=THICK_SLICES).train()
    assert model.strides == tuple(tuple(s) for s in THICK_SLICES)
    assert model.size_divisor == (16, 16, 2)
    out = model(torch.randn(2, 1, 32, 32, 8))
    assert out.logits.shape == (2, 2, 32, 32, 8)
    # taps at / (s1·s2) = / (4, 4, 1) and / s1 = / (2, 2, 1)
    assert [tuple(f.shape) for f in out.features] == [(2, 32, 8, 8, 8), (2, 16, 16, 16, 8), (2, 8, 32, 32, 8)]
    out.logits.square().mean().backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize("strides", [[2, 2, 2, 2], ((2, 2, 2),) * 4], ids=str)
def test_default_strides_spelled_out_give_the_same_network(backbone, strides):
    x = torch.randn(1, 1, 32, 32, 16)  # the UNet3D centre keeps 2 voxels for its InstanceNorm
    torch.manual_seed(0)
    reference = _small(backbone).eval()
    torch.manual_seed(0)
    spelled = _small(backbone, strides=strides).eval()
    assert spelled.strides == reference.strides == ((2, 2, 2),) * 4 and reference.size_divisor == (16, 16, 16)
    with torch.no_grad():
        assert torch.equal(spelled(x).logits, reference(x).logits)


def test_vnet_strides_set_resampling_kernels_and_parameter_count():
    model = VNet(strides=[[2, 2, 1]] * 4)
    assert model.down1[0].kernel_size == model.down1[0].stride == (2, 2, 1)
    assert model.up8[0].kernel_size == model.up8[0].stride == (2, 2, 1)
    # kernel = stride: the eight 2³ resampling convs (weights 4,096 + 16,384 + 65,536 + 262,144, down and up,
    # = 696,320) lose half their weights; 9,448,866 - 348,160.
    assert _num_params(model) == 9_100_706


def test_unet3d_parameter_count_does_not_depend_on_strides():
    model = UNet3D(strides=THICK_SLICES)
    assert _num_params(model) == 8_235_570
    assert [pool.kernel_size for pool in model.pools] == [tuple(s) for s in THICK_SLICES]
    up = model.up1.up[0]
    assert up.stride == (2, 2, 1) and up.output_padding == (1, 1, 0) and up.kernel_size == (3, 3, 3)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 1, 32, 24, 8), r"\(32, 24, 8\) has size 24 on axis 1 \(W\), which is not divisible by 16 "),
        ((1, 1, 16, 16, 3), r"\(16, 16, 3\) has size 3 on axis 2 \(D\), which is not divisible by 2 "),
    ],
    ids=["W", "D"],
)
def test_non_divisible_axis_is_named(backbone, shape, message):
    model = backbone(strides=THICK_SLICES)
    with pytest.raises(ValueError, match=rf"^{backbone.__name__}: input of spatial size {message}") as info:
        model(torch.zeros(shape))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
@pytest.mark.parametrize(
    "strides, match",
    [
        ([2, 2, 2], r"strides must be None or 4 entries"),
        ([[2, 2, 3], 2, 2, 2], r"strides\[0\] must be 1, 2 or 3 of them \(H, W, D\)"),
        ([2, [2, 2], 2, 2], r"strides\[1\]"),
        ([2, 2, 2, True], r"strides\[3\]"),
        ("2222", r"strides must be None"),
    ],
)
def test_bad_strides_raise(backbone, strides, match):
    with pytest.raises(ValueError, match=rf"{backbone.__name__}: {match}"):
        backbone(strides=strides)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_out_channels_is_monais_name_for_num_classes(backbone):
    assert _small(backbone, out_channels=3).head.out_channels == 3
    assert _small(backbone, out_channels=3).num_classes == 3
    assert _small(backbone, num_classes=3, out_channels=3).num_classes == 3
    assert _small(backbone).num_classes == 2
    with pytest.raises(ValueError, match=rf"{backbone.__name__}: num_classes=3 and out_channels=4 name the same thing"):
        _small(backbone, num_classes=3, out_channels=4)
