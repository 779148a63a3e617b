"""Shared helpers: autocast names, epoch seeds, model unwrapping."""

import pytest
import torch

from crln_monai.engines import SemiSupervisedTrainer  # noqa: F401  (the trainer and the inferer use these helpers)
from crln_monai.evaluation import UAMTSlidingWindowInferer
from crln_monai.utils import amp_dtype, epoch_seed, unwrap_model


@pytest.mark.parametrize(
    "name, dtype",
    [(None, None), ("none", None), ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), ("half", torch.float16),
     ("float16", torch.float16), (torch.bfloat16, torch.bfloat16)],
)  # fmt: skip
def test_amp_dtype_names(name, dtype):
    assert amp_dtype(name) is dtype


def test_unknown_amp_dtype_names_the_choices_in_trainer_and_inferer_alike():
    with pytest.raises(ValueError, match="amp_dtype must be .*'bf16'.*got 'fp8'"):
        amp_dtype("fp8")
    with pytest.raises(ValueError, match="got 'fp8'"):
        UAMTSlidingWindowInferer([8, 8, 8], [4, 4, 4], amp_dtype="fp8")
    assert UAMTSlidingWindowInferer([8, 8, 8], [4, 4, 4], amp_dtype="bf16").amp_dtype is torch.bfloat16


def test_epoch_seed_is_the_documented_formula_modulo_2_32():
    assert epoch_seed(0, 3) == 3
    assert epoch_seed(1, 2) == 1_000_005
    assert epoch_seed(5000, 1) == (5000 * 1_000_003 + 1) % 2**32 < 2**32


def test_unwrap_model_returns_the_wrapped_module():
    net = torch.nn.Linear(2, 2)
    assert unwrap_model(torch.nn.DataParallel(net)) is net and unwrap_model(net) is net
