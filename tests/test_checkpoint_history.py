"""Atomic checkpoints (umask, stale temporaries, extra values), the best metric in resume.pt, a continued history."""

import csv
import os
import stat

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader

from monai.handlers import TensorBoardStatsHandler

from crln_monai.handlers import AtomicCheckpointSaver, BestMetric, RunSummaryWriter, TrainingHistory, atomic_save
from crln_monai.handlers import every, host_scalars, remove_stale_temporaries
from crln_monai.handlers.history import read_history


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_atomic_save_follows_the_umask_and_leaves_no_temporary(tmp_path, umask_027):
    path = atomic_save({"w": torch.ones(2)}, tmp_path / "models" / "model.pt")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    assert os.listdir(tmp_path / "models") == ["model.pt"]
    os.umask(0o002)
    atomic_save({"w": torch.zeros(2)}, path)  # the replacement gets this umask's mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(2))


def test_a_failed_write_keeps_the_previous_checkpoint_and_no_temporary(tmp_path):
    path = atomic_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(Exception):
        atomic_save({"w": lambda: None}, path)  # a lambda cannot be pickled
    assert os.listdir(tmp_path) == ["model.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))


def test_stale_temporaries_are_removed_at_start_and_nothing_else(tmp_path):
    keep = [".resume.pt.notes", "resume.pt.abc.tmp", ".model.pt.abc123.tmp", ".resume.pt..tmp", "other.tmp"]
    stale = [".resume.pt.k2j3_x9.tmp", ".resume.pt.0a1b2c3d4e5f.tmp"]  # an old mkstemp name and one of ours
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"partial")
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(tmp_path, {"model": net}, "resume.pt", every_n_epochs=1, save_final=False)
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    engine.add_event_handler(Events.STARTED, lambda e: e.terminate())  # stop before the first save
    engine.run([0], max_epochs=1)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)  # nothing written yet, only our temporaries gone
    (tmp_path / stale[0]).write_bytes(b"partial")  # removed once per saver: a later one is not touched by save()
    saver.save()
    assert stale[0] in os.listdir(tmp_path) and (tmp_path / "resume.pt").is_file()
    assert remove_stale_temporaries(tmp_path / "resume.pt") == [tmp_path / stale[0]]
    assert remove_stale_temporaries(tmp_path / "missing" / "resume.pt") == []


def test_extra_values_are_written_beside_the_state_dicts(tmp_path):
    net, opt_net = torch.nn.Linear(2, 1), torch.nn.Linear(1, 1)
    settings = {"network": {"strides": [[2, 2, 1]], "backbone": "vnet", "dropout": None}, "class_names": ["bg", "LA"]}
    one = AtomicCheckpointSaver(tmp_path, {"model": net}, "model.pt", extra={"settings": settings}).save()
    loaded = torch.load(one, weights_only=True)
    assert set(loaded) == {"model", "settings"} and loaded["settings"] == settings
    assert all(torch.equal(loaded["model"][k], v) for k, v in net.state_dict().items())
    fresh = torch.nn.Linear(2, 1)
    CheckpointLoader(str(one), {"model": fresh})(Engine(lambda e, b: None))  # MONAI reads checkpoint["model"]
    assert torch.equal(fresh.weight, net.weight)
    two = AtomicCheckpointSaver(tmp_path, {"a": net, "b": opt_net}, "two.pt", extra={"n": 3}).save()
    assert set(torch.load(two, weights_only=True)) == {"a", "b", "n"}
    plain = AtomicCheckpointSaver(tmp_path, {"model": net}, "plain.pt").save()  # without extra: today's format
    assert set(torch.load(plain, weights_only=True)) == {"weight", "bias"}
    with pytest.raises(ValueError, match=r"model.pt: extra keys \['model'\]"):
        AtomicCheckpointSaver(tmp_path, {"model": net}, "model.pt", extra={"model": 1})
    with pytest.raises(TypeError, match=r"extra\['settings.device'\] = device\(type='cpu'\) is a device"):
        AtomicCheckpointSaver(tmp_path, {"model": net}, "model.pt", extra={"settings": {"device": torch.device("cpu")}})


class _Score(Metric):
    """A key metric that reports ``scores[n]`` at the evaluator's n-th run."""

    def __init__(self, scores: list[float]):
        self.scores = iter(scores)
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return next(self.scores)


def _evaluator(scores: list[float], saver_dir):
    """A MONAI evaluator of one case whose key metric at its n-th run is ``scores[n]``, with the best-only saver."""
    net = torch.nn.Linear(1, 1)
    loader = [{"image": torch.zeros(1, 1), "label": torch.zeros(1, 1)}]
    saver = AtomicCheckpointSaver(saver_dir, {"model": net}, "model.pt", best_only=True)
    evaluator = SupervisedEvaluator(
        "cpu", loader, net, epoch_length=1, key_val_metric={"score": _Score(scores)}, val_handlers=[saver]
    )
    return evaluator, net


def test_best_metric_round_trip_keeps_the_best_model_across_a_resume(tmp_path):
    evaluator, net = _evaluator([0.5, 0.8], tmp_path)
    evaluator.run(1)
    evaluator.run(2)
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.8, 2)
    state = BestMetric(evaluator).state_dict()
    assert state == {"best_metric": 0.8, "best_metric_epoch": 2}
    before = (tmp_path / "model.pt").read_bytes()

    resumed, resumed_net = _evaluator([0.7, 0.9], tmp_path)  # a fresh process: a worse, then a better score
    with torch.no_grad():
        resumed_net.weight.fill_(7.0)  # different weights, so an overwrite would show
    BestMetric(resumed).load_state_dict(state)
    resumed.run(3)
    assert (tmp_path / "model.pt").read_bytes() == before  # 0.7 < 0.8: the best model stays
    assert (resumed.state.best_metric, resumed.state.best_metric_epoch) == (0.8, 2)
    resumed.run(4)
    assert (resumed.state.best_metric, resumed.state.best_metric_epoch) == (0.9, 4)
    assert float(torch.load(tmp_path / "model.pt", weights_only=True)["weight"].flatten()[0]) == 7.0
    with pytest.raises(KeyError, match="best_metric_epoch"):
        BestMetric(resumed).load_state_dict({"best_metric": 0.3})


class _Trainer(Engine):
    """An engine whose output is ``loss = iteration / 10 + offset``, with an optimiser for the learning rate."""

    def __init__(self, offset: float):
        super().__init__(lambda e, b: {"loss": torch.tensor(e.state.iteration / 10 + offset)})
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def _history_run(out, offset, max_epochs, resume_iteration=0, terminate_at=None):
    """The history and TensorBoard handlers of train.json's ``train::reporting`` on a toy trainer."""
    history = TrainingHistory(out, interval=1)
    writer = RunSummaryWriter(out / "tensorboard")
    engine = _Trainer(offset)
    TensorBoardStatsHandler(writer, iteration_log=every(1), epoch_log=False, output_transform=host_scalars).attach(engine)
    writer.attach(engine)
    history.attach(engine)
    if resume_iteration:  # what CheckpointLoader does at STARTED, attached after the handlers
        state = {"iteration": resume_iteration, "epoch_length": 2, "max_epochs": max_epochs}
        engine.add_event_handler(Events.STARTED, lambda e: e.load_state_dict(state))
    if terminate_at:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=terminate_at), lambda e: e.terminate())
    engine.run(range(2), max_epochs=max_epochs)
    return history


def test_a_resumed_history_continues_the_csv_the_figure_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _history_run(tmp_path, offset=0.0, max_epochs=3, terminate_at=5)  # killed in epoch 3 after a row of iteration 5
    assert [r["iteration"] for r in read_history(tmp_path / "history.csv")] == [1, 2, 3, 4, 5]
    resumed = _history_run(tmp_path, offset=100.0, max_epochs=3, resume_iteration=4)  # resume.pt of epoch 2
    rows = read_history(tmp_path / "history.csv")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]  # row 5 of the killed run dropped, no duplicate
    assert [r["loss"] for r in rows] == pytest.approx([0.1, 0.2, 0.3, 0.4, 100.5, 100.6])
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2, 3, 3] and rows == resumed.rows
    with open(tmp_path / "history.csv") as f:
        assert next(csv.reader(f)) == ["iteration", "epoch", "loss", "lr"]
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = [(e.step, round(e.value, 4)) for e in events.Scalars("loss")]
    assert scalars == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 100.5), (6, 100.6)]

    fresh = _history_run(tmp_path, offset=0.0, max_epochs=1)  # a new run in the same folder starts a new history
    assert [r["iteration"] for r in fresh.rows] == [1, 2] and len(read_history(tmp_path / "history.csv")) == 2


def test_a_history_csv_that_is_not_numbers_is_named(tmp_path):
    (tmp_path / "history.csv").write_text("iteration,loss\n1.0,0.5\n2.0,abc\n")
    with pytest.raises(ValueError, match=r"history.csv: line 3 is not a row of numbers"):
        read_history(tmp_path / "history.csv")
    assert read_history(tmp_path / "absent.csv") == []


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, umask_027):
    """Ignite's Checkpoint removes a file of the same name before writing; the saver's disk handler must not."""
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(tmp_path, {"model": net}, "model_last.pt")
    path = saver.save()
    before = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the umask's mode, not Ignite's 0600 + group/other read
    net.state_dict = lambda: {"w": lambda: None}  # cannot be pickled: the next write fails
    with pytest.raises(Exception):
        saver.save()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model_last.pt"]


def test_host_scalars_reads_once_and_keeps_the_tensors():
    nan = float("nan")
    loss = torch.tensor(0.5)
    output = {"image": torch.zeros(2), "loss": loss, "mu": nan, "loss_u": torch.tensor([0.25])}
    assert host_scalars(output) == {"loss": 0.5, "loss_u": 0.25}  # NaN (a switched-off term) left out
    assert output["loss"] is loss and output["host_scalars"] == {"loss": 0.5, "loss_u": 0.25}
    output["loss"] = torch.tensor(9.0)  # a second reader of the same output gets the values read once
    assert host_scalars(output) == {"loss": 0.5, "loss_u": 0.25}
    assert [i for i in range(1, 10) if every(4)(None, i)] == [4, 8] and every(0)(None, 3)
