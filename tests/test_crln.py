"""CRLN as one module: shapes for both backbones, skipping the DIM, parameter groups, the inference wrapper."""

import pytest
import torch

from crln_monai.networks import CRLN, RectifiedPrediction
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
    assert out.embedding.shape == (1, 4, *size)  # D_r = K with prototype_reduce="feature" (METHOD A3)
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
    with pytest.raises(ValueError, match="backbone"):
        CRLN(backbone="resnet")
    with pytest.raises(ValueError, match="prototype_reduce"):
        CRLN(prototype_reduce="mean")
