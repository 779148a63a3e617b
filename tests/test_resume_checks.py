"""A resume checks the data and the schedule: other cases are refused (or, deliberately, continued and counted apart),
a changed epoch length, learning rate, momentum or weight decay is refused, a changed max_epochs is applied."""

import logging
import math

import pytest
import torch

from crln_monai.engines import poly_lr_scheduler, sgd
from crln_monai.handlers import RunRecord
from crln_monai.handlers.run_record import case_differences

SCHEDULE = {"epoch_length": 2, "max_epochs": 4, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


def _datalist(labelled, unlabelled, validation=()):
    splits = {"labelled": labelled, "unlabelled": unlabelled, "validation": validation, "test": ["t0"]}
    return {split: [{"image": f"/data/{c}.nii.gz", "case": c} for c in cases] for split, cases in splits.items()}


def _resume_pt(path, record: RunRecord | None, iteration=4, **schedule):
    """A resume.pt as the bundle writes it: the trainer's and the optimiser's states, and the run record."""
    values = {**SCHEDULE, **schedule}
    optimizer = sgd([torch.nn.Parameter(torch.zeros(1))], values["lr"], values["momentum"], values["weight_decay"])
    scheduler = poly_lr_scheduler(optimizer, values["max_epochs"])
    trainer = {"epoch_length": values["epoch_length"], "iteration": iteration, "max_epochs": values["max_epochs"]}
    checkpoint = {"trainer": trainer, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict()}
    if record is not None:
        checkpoint["run"] = record.state_dict()
    torch.save(checkpoint, path)
    return path


def test_case_differences_name_the_new_and_the_gone_cases_per_split():
    trained = {"labelled": ["a", "b"], "unlabelled": ["c", "d", "e", "f", "g", "h", "i"], "validation": ["v"]}
    current = {"labelled": ["a", "b", "c"], "unlabelled": ["d", "e"], "validation": ["v"]}
    assert case_differences(trained, current) == [
        "1 labelled case differs (new: c)",
        "5 unlabelled cases differ (gone: c, f, g, h, ...)",
    ]  # fmt: skip
    assert case_differences(trained, {**trained, "labelled": ["b", "a"]}) == []  # the same cases in another order


def test_a_resume_on_other_cases_is_refused_naming_them(tmp_path):
    trained = RunRecord(_datalist(["a", "b"], ["c", "d", "e"], ["v"]), SCHEDULE)
    path = _resume_pt(tmp_path / "resume.pt", trained)
    RunRecord(_datalist(["a", "b"], ["c", "d", "e"], ["v"]), SCHEDULE).check_resume(path)  # the same data
    other = RunRecord(_datalist(["a", "b", "x"], ["c", "d"], ["v"]), SCHEDULE)
    with pytest.raises(ValueError) as refused:
        other.check_resume(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path} was trained on other data: ")
    assert "1 labelled case differs (new: x); 1 unlabelled case differs (gone: e)." in message
    assert "--resume_other_data True" in message
    RunRecord(_datalist(["a"], ["c"]), SCHEDULE).check_resume(None)  # a fresh run: nothing to compare


def test_a_deliberate_change_of_data_is_continued_and_its_iterations_counted_apart(tmp_path, caplog):
    schedule = {**SCHEDULE, "max_epochs": 8}
    first = RunRecord(_datalist(["a", "b"], ["c", "d"]), schedule)
    path = _resume_pt(tmp_path / "resume.pt", first, iteration=4, max_epochs=8)
    more = RunRecord(_datalist(["a", "b"], ["c", "d", "e", "f"]), schedule, other_data=True)
    with caplog.at_level(logging.WARNING):
        more.check_resume(path)
    assert "continuing on other data (--resume_other_data True): 2 unlabelled cases differ (new: e, f)" in caplog.text
    assert more.iterations(10) == {"iterations_trained": 6, "iterations_on_earlier_data": 4}  # not 10 on this data
    again = _resume_pt(tmp_path / "again.pt", more, iteration=10, max_epochs=8)  # resumed again, on the same data
    same = RunRecord(_datalist(["a", "b"], ["c", "d", "e", "f"]), schedule)
    same.check_resume(again)
    assert same.iterations(12) == {"iterations_trained": 8, "iterations_on_earlier_data": 4}
    assert first.iterations(4) == {"iterations_trained": 4}  # one data set: every iteration is on it


def test_an_old_resume_file_without_a_record_is_not_compared(tmp_path, caplog):
    path = _resume_pt(tmp_path / "resume.pt", None)
    record = RunRecord(_datalist(["a"], ["b"]), SCHEDULE)
    with caplog.at_level(logging.WARNING):
        record.check_resume(path)
    assert "holds no record of its data set" in caplog.text and record.iterations(6) == {"iterations_trained": 6}


@pytest.mark.parametrize(
    "changed, trained",
    [({"epoch_length": 5}, "epoch_length=2"), ({"lr": 0.02}, "lr=0.01"), ({"momentum": 0.95}, "momentum=0.9"),
     ({"weight_decay": 0.0, "lr": 0.1}, "lr=0.01, weight_decay=0.0005")],
)  # fmt: skip
def test_a_schedule_setting_resume_pt_restores_is_refused_when_it_differs(tmp_path, changed, trained):
    datalist = _datalist(["a"], ["b"])
    path = _resume_pt(tmp_path / "resume.pt", RunRecord(datalist, SCHEDULE))
    with pytest.raises(ValueError) as refused:
        RunRecord(datalist, {**SCHEDULE, **changed}).check_resume(path)
    message = str(refused.value)
    assert "\n" not in message and f"was trained with {trained}; the config says " in message
    assert "Add --" in message and "--overwrite True" in message


def test_max_epochs_is_applied_unless_below_the_epoch_reached(tmp_path, caplog):
    datalist = _datalist(["a"], ["b"])
    path = _resume_pt(tmp_path / "resume.pt", RunRecord(datalist, SCHEDULE), iteration=6)  # epoch 3 of 4
    with caplog.at_level(logging.INFO):
        RunRecord(datalist, {**SCHEDULE, "max_epochs": 8}).check_resume(path)
    assert "max_epochs 4 -> 8" in caplog.text
    RunRecord(datalist, {**SCHEDULE, "max_epochs": 3}).check_resume(path)  # ends the run now: allowed
    with pytest.raises(ValueError, match=r"is at epoch 3, beyond max_epochs=2: resume with --max_epochs 3 or more"):
        RunRecord(datalist, {**SCHEDULE, "max_epochs": 2}).check_resume(path)


def _scheduler_after(steps: int, total: int):
    optimizer = sgd([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = poly_lr_scheduler(optimizer, total)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def test_a_restored_poly_schedule_follows_the_configured_length():
    _, old = _scheduler_after(steps=4, total=4)  # at the end of a 4-epoch run: learning rate 0
    state = {"optimizer": old.optimizer.state_dict(), "scheduler": old.state_dict()}
    optimizer, extended = _scheduler_after(steps=0, total=8)  # resumed with max_epochs 8
    optimizer.load_state_dict(state["optimizer"])
    extended.load_state_dict(state["scheduler"])
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        extended.step()
    assert extended.total_iters == 8 and rates == pytest.approx([(1 - t / 8) ** 0.9 for t in range(4, 8)])
    assert optimizer.param_groups[0]["lr"] == 0.0
    optimizer, same = _scheduler_after(steps=0, total=4)  # the same length: restored untouched
    optimizer.load_state_dict(state["optimizer"])
    same.load_state_dict(state["scheduler"])
    assert same.state_dict() == state["scheduler"] and math.isclose(optimizer.param_groups[0]["lr"], 0.0)
