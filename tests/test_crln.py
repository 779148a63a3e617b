"""CRLN as one module: shapes for both backbones, skipping the DIM, parameter groups, the inference wrapper."""

import pytest
import torch

from crln_monai.networks import CRLN, RectifiedPrediction
from crln_monai.networks.crln import ProjectionHead
from crln_monai.losses import SegmentationLoss


@pytest.mark.parametrize("backbone", ["vnet", "unet3d"])
@pytest.mark.parametrize("size", [(112, 112, 80), (96, 96, 96), (64, 64, 64)])
def test_output_shapes(backbone, size):
    net = CRLN(backbone=backbone, patch_size=size, num_prototypes=4).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, *size))
    assert out.logits.shape == (1, 2, *size)
    assert out.relation_map.shape == (1, 2, *size)
    assert out.rectified_logits.shape == (1, 2, *size)
    assert out.embedding.shape == (1, 4, *size)  # D_r = K with prototype_reduce="feature" (docs/method.md, A3)
    assert (out.relation_map >= 0).all()


def test_multichannel_multiclass_and_prototype_reduce():
    net = CRLN(in_channels=4, num_classes=3, patch_size=(32, 32, 32), num_prototypes=2, prototype_reduce="prototype")
    out = net(torch.rand(2, 4, 32, 32, 32))
    assert out.logits.shape == (2, 3, 32, 32, 32) and out.relation_map.shape == (2, 3, 32, 32, 32)
    assert out.embedding.shape[1] == net.prototypes.shape[-1] == 64
    assert net.prototypes.shape == (3, 2, 64)


def test_skipping_dim_and_embedding():
    net = CRLN(patch_size=(32, 32, 32), num_prototypes=2)
    out = net(torch.rand(2, 1, 32, 32, 32), with_dim=False, with_embedding=False)
    assert out.relation_map is None and out.rectified_logits is None and out.embedding is None
    assert torch.equal(out.prediction, out.logits)
    plain = CRLN(patch_size=(32, 32, 32), use_dim=False, use_projection=False)
    assert plain.dim is None and plain.rectifier is None and plain.prototypes is None
    assert plain(torch.rand(1, 1, 32, 32, 32)).relation_map is None


def test_dim_tied_to_patch_size():
    net = CRLN(patch_size=(32, 32, 32), num_prototypes=2)
    with pytest.raises(ValueError, match="patch"):
        net(torch.rand(1, 1, 48, 32, 32))
    assert net(torch.rand(1, 1, 48, 32, 32), with_dim=False).logits.shape == (1, 2, 48, 32, 32)


def test_student_parameters_exclude_rectifier_and_supervised_gradient_reaches_dim():
    net = CRLN(patch_size=(32, 32, 32), num_prototypes=2)
    rect = {id(p) for p in net.rectifier.parameters()}
    student = net.student_parameters()
    assert rect and not rect & {id(p) for p in student}
    assert len(student) + len(rect) == len(list(net.parameters()))
    image, label = torch.rand(2, 1, 32, 32, 32), (torch.rand(2, 1, 32, 32, 32) > 0.5).long()
    out = net(image)
    SegmentationLoss()(out.relation_map, label).backward()
    assert net.prototypes.grad is not None and net.prototypes.grad.abs().sum() > 0


def test_rectified_prediction_wrapper_round_trips_state():
    net = CRLN(patch_size=(32, 32, 32), num_prototypes=2).eval()
    wrapped = RectifiedPrediction(net)
    assert set(wrapped.state_dict()) == set(net.state_dict())
    other = CRLN(patch_size=(32, 32, 32), num_prototypes=2).eval()
    RectifiedPrediction(other).load_state_dict(wrapped.state_dict())
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(RectifiedPrediction(other)(x), net(x).rectified_logits)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        CRLN(num_classes=1)
    with pytest.raises(ValueError, match="num_classes"):
        CRLN(out_channels=1)
    with pytest.raises(ValueError, match="backbone"):
        CRLN(backbone="resnet")
    with pytest.raises(ValueError, match="prototype_reduce"):
        CRLN(prototype_reduce="mean")


# --- anisotropic strides, other widths, MONAI's out_channels -----------------------------------------------------

THICK_SLICES = [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]]  # total stride (16, 16, 2)
NARROW = {"vnet": {"base_filters": 8}, "unet3d": {"feature_scale": 8}}  # taps of 32, 16 and 8 channels


@pytest.mark.parametrize("backbone", ["vnet", "unet3d"])
def test_anisotropic_strides_shapes_and_gradients_through_every_head(backbone):
    torch.manual_seed(0)
    patch = (32, 32, 8)
    net = CRLN(
        backbone=backbone, patch_size=patch, num_prototypes=2, strides=THICK_SLICES, backbone_kwargs=NARROW[backbone]
    ).train()
    assert net.backbone.strides == tuple(tuple(s) for s in THICK_SLICES)
    assert net.dim.strides == ((2, 2, 1), (2, 2, 1)) and net.dim.level_sizes == ((8, 8, 8), (16, 16, 8))
    assert net.dim.feature_channels == (32, 16) and net.prototypes.shape == (2, 2, 32)
    out = net(torch.rand(2, 1, *patch))
    for name in ("logits", "relation_map", "rectified_logits"):
        assert getattr(out, name).shape == (2, 2, *patch), name
    assert out.embedding.shape == (2, 2, *patch)  # D_r = K
    generator = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=generator)).sum() for t in out)
    loss.backward()
    first_conv = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv3d))
    for name, parameter in [
        ("backbone", first_conv.weight),
        ("prototypes", net.prototypes),
        ("dim upsampling", net.dim.upsample.weight),
        ("projection", net.projection[-1].weight),
        ("rectifier", net.rectifier.raw_mu),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backbone", ["vnet", "unet3d"])
def test_dim_and_projection_read_the_backbone_widths(backbone):
    net = CRLN(backbone=backbone, patch_size=(32, 32, 16), num_prototypes=2, prototype_reduce="prototype",
               backbone_kwargs=NARROW[backbone])
    assert net.backbone.feature_channels == (32, 16, 8) and net.dim.feature_channels == (32, 16)
    out = net(torch.rand(1, 1, 32, 32, 16))
    assert net.prototypes.shape == (2, 2, 32)
    assert out.relation_map.shape == (1, 2, 32, 32, 16)
    assert out.embedding.shape == (1, 32, 32, 32, 16)  # D_r = F with prototype_reduce="prototype"
    plain = CRLN(backbone=backbone, patch_size=(32, 32, 16), use_dim=False, prototype_reduce="prototype",
                 backbone_kwargs=NARROW[backbone])
    assert plain.projection[-1].out_channels == 32


def test_default_parameter_counts_unchanged():
    # measured on the code before per-axis strides existed (LA patch, K = 16, learnable_v3, projection head)
    assert sum(p.numel() for p in CRLN().parameters()) == 9_769_638
    assert sum(p.numel() for p in CRLN(backbone="unet3d").parameters()) == 8_556_342


def _kaiming_std(conv: torch.nn.Module) -> float:
    return (2.0 / conv.weight[0].numel()) ** 0.5  # Kaiming-normal, fan_in mode, gain √2


def _pytorch_default_std(conv: torch.nn.Module) -> float:
    return (1.0 / (3.0 * conv.weight[0].numel())) ** 0.5  # U(±1/√fan_in), PyTorch's default conv init


def test_projection_head_init_is_the_authors_kaiming_by_default():
    torch.manual_seed(0)
    head = ProjectionHead(64, 64)
    for conv in (head[0], head[3]):  # 3³ conv (fan_in 1728) and 1³ conv (fan_in 64)
        assert conv.weight.std().item() == pytest.approx(_kaiming_std(conv), rel=0.05)
    assert torch.equal(head[1].weight, torch.ones(64)) and torch.equal(head[1].bias, torch.zeros(64))
    ours = ProjectionHead(64, 64, init="default")
    for conv in (ours[0], ours[3]):
        assert conv.weight.std().item() == pytest.approx(_pytorch_default_std(conv), rel=0.05)
        assert conv.weight.abs().max().item() <= 3.0**0.5 * _pytorch_default_std(conv)


def test_projection_init_switch_through_crln():
    # LA widths: the 3³ conv reads 16 channels, fan_in 432, std √(2/432) ≈ 0.068 vs ≈ 0.028 (PyTorch's default)
    torch.manual_seed(0)
    conv = CRLN(patch_size=(32, 32, 16)).projection[0]
    assert conv.weight.std().item() == pytest.approx(0.068, abs=0.003)
    conv = CRLN(patch_size=(32, 32, 16), projection_init="default").projection[0]
    assert conv.weight.std().item() == pytest.approx(0.028, abs=0.002)
    with pytest.raises(ValueError, match=r"projection_init must be one of \('kaiming', 'default'\), got 'xavier'"):
        CRLN(patch_size=(32, 32, 16), projection_init="xavier")
    with pytest.raises(ValueError, match=r"init \(CRLN's projection_init\) must be one of"):
        ProjectionHead(16, 16, init="xavier")


def test_init_switches_keep_the_parameter_count():
    switched = CRLN(projection_init="default", dim_kwargs={"upsample_init": "kaiming"})
    assert sum(p.numel() for p in switched.parameters()) == 9_769_638


def test_default_strides_spelled_out_give_the_same_outputs():
    x = torch.rand(1, 1, 32, 32, 16)
    outputs = []
    for strides in (None, [2, 2, 2, 2]):
        torch.manual_seed(0)
        net = CRLN(patch_size=(32, 32, 16), num_prototypes=2, strides=strides, backbone_kwargs={"base_filters": 8})
        with torch.no_grad():
            outputs.append(net.eval()(x))
    for first, second in zip(*outputs):
        assert torch.equal(first, second)


def test_out_channels_is_monais_name_for_num_classes():
    net = CRLN(out_channels=3, patch_size=(32, 32, 16), num_prototypes=2, backbone_kwargs={"base_filters": 8})
    assert net.num_classes == net.backbone.num_classes == 3 and net.prototypes.shape[0] == 3
    assert CRLN(num_classes=3, out_channels=3, patch_size=(32, 32, 16), use_dim=False).num_classes == 3
    with pytest.raises(ValueError, match=r"CRLN: num_classes=3 and out_channels=4 name the same thing"):
        CRLN(num_classes=3, out_channels=4)


def test_patch_not_divisible_by_the_strides_names_the_axis():
    with pytest.raises(ValueError, match=r"^CRLN: patch_size \(32, 32, 8\) has size 8 on axis 2 \(D\), which is "
                       r"not divisible by 16 \(the product of that axis' strides\)$"):
        CRLN(patch_size=(32, 32, 8), use_dim=False)
    with pytest.raises(ValueError, match=r"axis 2 \(D\), which is not divisible by 2 "):
        CRLN(patch_size=(32, 32, 5), strides=THICK_SLICES, use_dim=False)


def test_strides_given_twice_or_derived_dim_arguments_raise():
    with pytest.raises(ValueError, match="strides given both"):
        CRLN(patch_size=(32, 32, 8), strides=THICK_SLICES, backbone_kwargs={"strides": THICK_SLICES})
    with pytest.raises(ValueError, match="strides applies to a named backbone"):
        CRLN(backbone=torch.nn.Identity(), strides=THICK_SLICES)
    with pytest.raises(ValueError, match=r"dim_kwargs may not set \['feature_channels'\]"):
        CRLN(patch_size=(32, 32, 16), dim_kwargs={"feature_channels": (64, 32)})
    # strides inside backbone_kwargs alone are honoured (the DIM follows them)
    net = CRLN(patch_size=(32, 32, 8), num_prototypes=2, use_projection=False,
               backbone_kwargs={"strides": THICK_SLICES, "base_filters": 8})
    assert net.dim.level_sizes == ((8, 8, 8), (16, 16, 8))
