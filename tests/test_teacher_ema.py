"""Tests for crln_monai.engines.TeacherEMA (docs/method.md#teacher-ema, A9)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from crln_monai.engines import TeacherEMA


class Rectifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(()))


class TinyNet(nn.Module):
    """Conv + BN + head + an unused head + a rectifier with μ: every kind of parameter CRLN has."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm3d(channels)
        self.head = nn.Conv3d(channels, 2, 1)
        self.unused_head = nn.Conv3d(channels, 2, 1)
        self.rectifier = Rectifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))


def pair(seed: int = 0) -> tuple[TinyNet, TinyNet]:
    torch.manual_seed(seed)
    student = TinyNet()
    teacher = TinyNet()  # independent init, so "teacher == student" is a real change
    return student, teacher


@torch.no_grad()
def perturb(model: nn.Module, generator: torch.Generator) -> None:
    """A stand-in for an optimiser step: change every parameter of the student."""
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=generator, device=p.device))


def test_alpha_schedule_and_cap():
    ema = TeacherEMA(*pair())
    assert [ema.alpha(t) for t in range(5)] == pytest.approx([0.0, 1 / 2, 2 / 3, 3 / 4, 4 / 5])
    assert ema.alpha(99) == pytest.approx(0.99) and ema.alpha(5000) == pytest.approx(0.99)
    assert ema.alpha(200) == 0.99
    capped = TeacherEMA(*pair(), max_decay=0.6)
    assert [capped.alpha(t) for t in range(4)] == pytest.approx([0.0, 0.5, 0.6, 0.6])
    with pytest.raises(ValueError, match="step"):
        ema.alpha(-1)


def test_first_update_makes_teacher_equal_student_exactly():
    student, teacher = pair()
    ema = TeacherEMA(student, teacher)
    assert ema.step == 0
    assert ema.update() == 0.0
    assert ema.step == 1
    for (name, s), (_, t) in zip(student.named_parameters(), teacher.named_parameters()):
        assert torch.equal(s, t), name
        assert s.data_ptr() != t.data_ptr()


def test_foreach_update_matches_naive_loop_over_steps():
    student, teacher = pair()
    reference = copy.deepcopy(teacher)
    ema = TeacherEMA(student, teacher, copy_prefixes=("rectifier.",))
    generator = torch.Generator().manual_seed(7)
    for t in range(6):
        perturb(student, generator)
        alpha = ema.update()
        assert alpha == pytest.approx(min(1 - 1 / (t + 1), 0.99))
        with torch.no_grad():
            for (name, ref), s in zip(reference.named_parameters(), student.parameters()):
                if name.startswith("rectifier."):
                    ref.copy_(s)
                else:
                    ref.mul_(alpha).add_(s, alpha=1 - alpha)
        for (name, ref), t_param in zip(reference.named_parameters(), teacher.parameters()):
            assert torch.equal(t_param, ref), name  # same ops, same order: bitwise equal
    # after several steps the averaged parameters differ from the student's
    assert not torch.equal(teacher.conv.weight, student.conv.weight)


def test_buffers_are_not_touched():
    student, teacher = pair()
    with torch.no_grad():
        student.train()(torch.randn(2, 1, 4, 4, 4))  # changes the student's BN running stats
    buffers_before = {name: b.clone() for name, b in teacher.named_buffers()}
    ema = TeacherEMA(student, teacher)
    for _ in range(3):
        ema.update()
    for name, b in teacher.named_buffers():
        assert torch.equal(b, buffers_before[name]), name
    assert not torch.equal(teacher.bn.running_mean, student.bn.running_mean)
    assert teacher.bn.running_mean.data_ptr() != student.bn.running_mean.data_ptr()


def test_copy_prefixes_are_copied_not_averaged():
    student, teacher = pair()
    ema = TeacherEMA(student, teacher, copy_prefixes=("rectifier.", "unused_head.bias"))
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        ema.update()
        perturb(student, generator)
    ema.update()  # alpha = 0.8: averaged parameters lag behind the student
    assert torch.equal(teacher.rectifier.mu, student.rectifier.mu)
    assert torch.equal(teacher.unused_head.bias, student.unused_head.bias)
    assert not torch.equal(teacher.unused_head.weight, student.unused_head.weight)
    # without the prefix, mu is averaged like everything else
    student2, teacher2 = pair()
    ema2 = TeacherEMA(student2, teacher2, copy_prefixes=())
    ema2.update()
    with torch.no_grad():
        student2.rectifier.mu.fill_(1.0)
        teacher2.rectifier.mu.fill_(0.0)
    ema2.update()  # alpha = 0.5
    assert float(teacher2.rectifier.mu.detach()) == pytest.approx(0.5)


def test_state_dict_round_trip_continues_the_schedule():
    student, teacher = pair()
    ema = TeacherEMA(student, teacher, max_decay=0.9)
    for _ in range(3):
        ema.update()
    state = ema.state_dict()
    assert state == {"step": 3, "max_decay": 0.9}

    resumed = TeacherEMA(*pair(1))
    resumed.load_state_dict(state)
    assert resumed.step == 3 and resumed.max_decay == 0.9
    assert resumed.update() == pytest.approx(0.75)
    assert resumed.step == 4
    resumed.load_state_dict({"step": torch.tensor(20)})
    assert resumed.update() == pytest.approx(0.9)  # capped by the restored max_decay
    with pytest.raises(ValueError, match="step"):
        resumed.load_state_dict({})
    with pytest.raises(ValueError, match="step"):
        resumed.load_state_dict({"step": -2})


def test_mismatched_models_raise():
    student = TinyNet()
    with pytest.raises(ValueError, match="names differ"):
        TeacherEMA(student, nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="shapes"):
        TeacherEMA(student, TinyNet(channels=4))
    with pytest.raises(ValueError, match="shapes"):
        TeacherEMA(student, TinyNet().double())
    with pytest.raises(ValueError, match="same module"):
        TeacherEMA(student, student)
    with pytest.raises(ValueError, match="max_decay"):
        TeacherEMA(student, TinyNet(), max_decay=1.5)
    with pytest.raises(TypeError, match="copy_prefixes"):
        TeacherEMA(student, TinyNet(), copy_prefixes="rectifier.")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_wrapped_student_is_unwrapped(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        student, teacher = pair()
        wrapped = nn.parallel.DistributedDataParallel(student)
        ema = TeacherEMA(wrapped, teacher)
        ema.update()
        for s, t in zip(student.parameters(), teacher.parameters()):
            assert torch.equal(s, t)
        # DDP's reducer holds the group: freed after destroy_process_group, its gloo thread waits for the GIL that
        # the freeing thread holds (a deadlock seen once in the suite), so it goes first
        del ema, wrapped
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
def test_cuda_update_matches_naive_loop_without_host_sync():
    student, teacher = (m.cuda() for m in pair())
    reference = copy.deepcopy(teacher)
    ema = TeacherEMA(student, teacher)
    generator = torch.Generator("cuda").manual_seed(3)
    ema.update()  # warm-up
    with torch.no_grad():
        for ref, s in zip(reference.parameters(), student.parameters()):
            ref.copy_(s)
    for _ in range(3):
        perturb(student, generator)
        torch.cuda.set_sync_debug_mode("error")
        try:
            alpha = ema.update()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        with torch.no_grad():
            for (name, ref), s in zip(reference.named_parameters(), student.parameters()):
                ref.copy_(s) if name.startswith("rectifier.") else ref.mul_(alpha).add_(s, alpha=1 - alpha)
    for ref, t in zip(reference.parameters(), teacher.parameters()):
        torch.testing.assert_close(t, ref)


def test_copy_buffers_gives_the_teacher_the_students_bn_statistics():
    student = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    teacher = copy.deepcopy(student)
    student(torch.randn(2, 1, 4, 4, 4))  # train mode: updates the student's running statistics only
    ema = TeacherEMA(student, teacher)
    ema.update()
    assert not torch.equal(teacher[1].running_mean, student[1].running_mean)  # default: buffers untouched
    ema.copy_buffers = True
    ema.update()
    for t, s in zip(teacher.buffers(), student.buffers()):
        assert torch.equal(t, s)


def test_mirror_copies_parameters_and_buffers_without_a_step():
    student, teacher = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)), None
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()(torch.randn(8, 3))  # moves the student's running statistics
    ema = TeacherEMA(student, teacher)
    ema.update()  # step 0 → 1
    with torch.no_grad():
        student[0].weight.mul_(3.0)
    student(torch.randn(8, 3))
    ema.mirror()
    assert ema.step == 1
    for (name, t), s in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(t, s), name
