"""The optimiser factories: μ gets an optimiser only when the rectifier has parameters."""

import pytest
import torch

from crln_monai.engines import poly_lr_scheduler, rectifier_optimizer, sgd
from crln_monai.networks import CRLN


def _crln(**kwargs) -> CRLN:
    return CRLN(in_channels=1, num_classes=2, patch_size=(32, 32, 16), num_prototypes=2, **kwargs)


def test_sgd_is_nesterov_with_the_given_arguments():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = sgd([p], lr=0.01, momentum=0.8, weight_decay=1e-4)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.01, 0.8, True, 1e-4)


@pytest.mark.parametrize("mode", ["learnable_v2", "learnable_v3"])
def test_learnable_rectifiers_get_an_optimiser_over_exactly_their_parameters(mode):
    net = _crln(rectifier=mode)
    opt = rectifier_optimizer(net, lr=0.01)
    params = opt.param_groups[0]["params"]
    assert {id(p) for p in params} == {id(p) for p in net.rectifier.parameters()} and params
    assert not {id(p) for p in params} & {id(p) for p in net.student_parameters()}


def test_fixed_rectifier_and_no_dim_get_no_optimiser_and_no_schedule():
    for net in (_crln(rectifier="fixed_v1"), _crln(use_dim=False)):
        opt = rectifier_optimizer(net, lr=0.01)
        assert opt is None and poly_lr_scheduler(opt, total_iters=10) is None


def test_poly_schedule_decays_to_zero_with_power_0_9():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = sgd([p], lr=1.0)
    sched = poly_lr_scheduler(opt, total_iters=4)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx((1 - 2 / 4) ** 0.9)
