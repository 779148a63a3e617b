"""SemiSupervisedTrainer: the ablation switches skip what they should; non-finite losses stop cleanly."""

import copy

import pytest
import torch

from crln_monai.handlers import AtomicCheckpointSaver, NonFiniteCheck
from crln_monai.data import StrongAugment
from crln_monai.engines import SemiSupervisedTrainer, pseudo_label_dice
from crln_monai.losses import CPSLoss
from crln_monai.networks import CRLN

PATCH = (32, 32, 16)


def _batches(n=2, unlabelled_has_label=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        image = torch.rand(4, 1, *PATCH, generator=g)
        label = (image > 0.6).long()
        if not unlabelled_has_label:
            label[2:] = -1
        out.append({"image": image, "label": label})
    return out


def _trainer(use_dim=True, use_unlabelled=True, cps=True, rectify_start=0, data=None, lr=0.01, max_epochs=1, **kwargs):
    torch.manual_seed(0)
    net = CRLN(patch_size=PATCH, num_prototypes=2, use_dim=True)
    teacher = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.SGD(net.student_parameters(), lr=lr, momentum=0.9)
    ropt = torch.optim.SGD(net.rectifier.parameters(), lr=lr, momentum=0.9)
    trainer = SemiSupervisedTrainer(
        "cpu", max_epochs, data or _batches(), net, teacher, opt, ropt,
        cps_loss=CPSLoss(num_queries=8, num_negatives=16) if cps else None,
        strong_augment=StrongAugment(), use_dim=use_dim, use_unlabelled=use_unlabelled,
        rectify_start=rectify_start, check_interval=1, **kwargs,
    )  # fmt: skip
    return trainer, net, teacher


def test_full_method_runs_and_logs_every_term():
    trainer, net, teacher = _trainer()
    trainer.run()
    out = trainer.state.output
    for key in ("loss", "loss_sup", "loss_relation", "loss_u", "loss_cp", "loss_mu", "confident_share_rectified"):
        assert torch.isfinite(out[key]), key
    assert out["rectifying"] == 1
    assert torch.isnan(out["pseudo_label_dice"])  # unlabelled volumes have no labels here
    from crln_monai.engines.outputs import TRAINING_SCALARS  # what history.csv records: exactly the scalars given

    assert set(out) == {"image", "label", *TRAINING_SCALARS}
    # teacher = EMA of the student; the rectifier is shared (copied), not averaged
    assert torch.equal(teacher.rectifier.raw_mu, net.rectifier.raw_mu)
    assert trainer.teacher_ema.step == 2


def test_baseline_mode_gives_no_dim_parameter_a_gradient():
    trainer, net, _ = _trainer(use_dim=False)
    trainer.run()
    assert all(p.grad is None for p in net.dim.parameters())
    assert net.rectifier.raw_mu.grad is None and trainer.rectifier_optimizer is None
    assert torch.isnan(trainer.state.output["loss_relation"]) and torch.isnan(trainer.state.output["mu"])
    assert torch.isfinite(trainer.state.output["loss_u"])


def test_supervised_only_never_runs_the_teacher():
    trainer, net, teacher = _trainer(use_unlabelled=False, cps=False)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    trainer.run()
    assert calls == []
    assert torch.isnan(trainer.state.output["loss_u"]) and torch.isnan(trainer.state.output["loss_cp"])
    assert any(p.grad is not None for p in net.dim.parameters())  # the DIM is still supervised on labels
    # the teacher never ran, so it takes the student's BN statistics (else eval-mode predictions are garbage)
    for (name, t), s in zip(teacher.named_buffers(), net.buffers()):
        assert torch.equal(t, s), name


def test_burn_in_trains_on_labels_only_then_starts_the_unlabelled_losses():
    """Iterations 1..supervised_iterations: no teacher forward, no pseudo-label loss or CPS, and the teacher is the
    student's copy; afterwards the full objective, and the EMA's warm-up starts from that copy."""
    from ignite.engine import Events

    trainer, net, teacher = _trainer(data=_batches(n=3), supervised_iterations=2)
    calls, outputs, copies = [], [], []
    teacher.register_forward_hook(lambda *a: calls.append(trainer.state.iteration))

    def record(engine):
        outputs.append(dict(engine.state.output))
        pairs = zip(teacher.state_dict().values(), net.state_dict().values())
        copies.append(all(torch.equal(t, s) for t, s in pairs))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    assert calls == [3]  # the teacher pseudo-labels only after the burn-in
    for out in outputs[:2]:
        assert torch.isnan(out["loss_u"]) and torch.isnan(out["loss_cp"]) and torch.isfinite(out["loss_relation"])
        assert torch.isfinite(out["loss_mu"])  # the μ step is supervised: it runs in the burn-in too
    assert torch.isfinite(outputs[2]["loss_u"]) and torch.isfinite(outputs[2]["loss_cp"])
    # a copy during the burn-in; the first EMA step (α = 0) copies the parameters, the BN statistics are the teacher's
    assert copies == [True, True, False]
    assert trainer.teacher_ema.step == 1 and trainer.run_values()["supervised_iterations"] == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_burn_in_length_is_checked(bad):
    with pytest.raises(ValueError, match="supervised_iterations must be an int >= 0"):
        _trainer(supervised_iterations=bad)


def test_learning_stage_uses_plain_pseudo_labels():
    trainer, _, _ = _trainer(rectify_start=100)
    trainer.run()
    assert trainer.state.output["rectifying"] == 0
    assert torch.isnan(trainer.state.output["confident_share_rectified"])


def test_pseudo_label_dice_is_logged_when_labels_exist():
    trainer, _, _ = _trainer(data=_batches(unlabelled_has_label=True))
    trainer.run()
    dice = trainer.state.output["pseudo_label_dice"]
    assert 0 <= float(dice) <= 1


def test_pseudo_label_dice_by_hand():
    pseudo = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]]).reshape(2, 4, 1, 1)
    label = torch.tensor([[[1, 0, 0, 0]], [[-1, -1, -1, -1]]]).reshape(2, 1, 4, 1, 1)
    # only volume 0 has a label: Dice = 2*1 / (2 + 1)
    assert torch.isclose(pseudo_label_dice(pseudo, label, 2), torch.tensor(2 / 3))
    assert torch.isnan(pseudo_label_dice(pseudo, torch.full_like(label, -1), 2))


def test_non_finite_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    data = _batches(n=2)
    data[1] = {k: v.clone() for k, v in data[1].items()}
    data[1]["image"][0, 0, 0, 0, 0] = float("nan")
    trainer, net, teacher = _trainer(data=data, epoch_length=1, max_epochs=2)
    trainer.check_interval = 100  # the check before the checkpoint write must catch it
    NonFiniteCheck().attach(trainer)  # before the saver, as in train.json
    saver = AtomicCheckpointSaver(tmp_path, {"model": teacher}, "model_last.pt")
    saver.attach(trainer)
    with pytest.raises(FloatingPointError, match="non-finite loss at or before iteration 2"):
        trainer.run()
    saved = torch.load(tmp_path / "model_last.pt")
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert not all(torch.isfinite(p).all() for p in net.parameters())  # the run did diverge in memory


def test_bad_configuration_errors():
    net = CRLN(patch_size=PATCH, use_dim=False, use_projection=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="use_dim=True needs"):
        SemiSupervisedTrainer("cpu", 1, [], net, copy.deepcopy(net), opt)
    with pytest.raises(ValueError, match="projection head"):
        SemiSupervisedTrainer("cpu", 1, [], net, copy.deepcopy(net), opt, use_dim=False, cps_loss=CPSLoss())
    with pytest.raises(ValueError, match="amp_dtype"):
        SemiSupervisedTrainer("cpu", 1, [], net, copy.deepcopy(net), opt, use_dim=False, amp_dtype="int8")


@pytest.mark.gpu
@pytest.mark.parametrize("amp_dtype", [None, "bfloat16"])
def test_a_cuda_iteration_never_waits_for_the_device(amp_dtype):
    """The second iteration (the first one sets cuDNN up) makes no host synchronisation, so the host can queue
    the next iteration while the GPU works; the check interval is the only planned one."""
    from ignite.engine import Events

    data = [{k: v.cuda() for k, v in batch.items()} for batch in _batches(3)]
    torch.manual_seed(0)
    net = CRLN(patch_size=PATCH, num_prototypes=2).cuda()
    teacher = copy.deepcopy(net).requires_grad_(False)
    trainer = SemiSupervisedTrainer(
        "cuda", 1, data, net, teacher, torch.optim.SGD(net.student_parameters(), lr=0.01),
        torch.optim.SGD(net.rectifier.parameters(), lr=0.01), cps_loss=CPSLoss(num_queries=8, num_negatives=16),
        strong_augment=StrongAugment(), rectify_start=0, check_interval=100, amp_dtype=amp_dtype,
        seed=0,
    )  # fmt: skip
    trainer.add_event_handler(Events.ITERATION_STARTED(once=2), lambda _: torch.cuda.set_sync_debug_mode("error"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda _: torch.cuda.set_sync_debug_mode("default"))
    try:
        trainer.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.state.iteration == 3 and torch.isfinite(trainer.state.output["loss"]).item()


def test_run_values_state_what_the_objects_hold():
    trainer, _, _ = _trainer(use_unlabelled=False, cps=False, lr=0.03, rectify_start=7, seed=5)
    values = trainer.run_values()  # before the run: the state's schedule is already set by the constructor
    assert values == {
        "max_epochs": 1, "epoch_length": 2, "labelled_batch_size": 2, "unlabelled_batch_size": None, "lr": 0.03,
        "rectify_start": 7, "supervised_iterations": 0, "use_unlabelled": False, "use_dim": True, "use_cps": False,
        "seed": 5,
    }  # fmt: skip
    assert _trainer()[0].run_values()["use_cps"] is True
