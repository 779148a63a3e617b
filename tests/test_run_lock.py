"""A run owns its folders: the lock (held, stale, released on every way out) and the guard against a fresh run over
a finished one; the output folders a failed run created and left empty are removed."""

import json
import logging
import os
import socket
import subprocess

import pytest
import torch
from ignite.engine import Engine, Events

from crln_monai.workflow.outputs import check_outputs, remove_empty_created
from crln_monai.handlers import RunGuard, RunLock, RunLockedError
from crln_monai.handlers.run_lock import lock_holder


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _write_lock(folder, pid, host=None, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-02T03:04:05+00:00",
              "command": "python -m monai.bundle run training --bundle_root run", **extra}  # fmt: skip
    (folder / "run.lock").write_text(json.dumps(record) + "\n")
    return (folder / "run.lock").read_bytes()


@pytest.fixture
def live_pid():
    """A live process other than this one (a holder the lock cannot see through as "this process")."""
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


def test_a_live_holder_is_refused_in_one_line_naming_it_and_its_lock_is_kept(tmp_path, live_pid):
    before = _write_lock(tmp_path / "models", live_pid)
    lock = RunLock(tmp_path / "models")
    for attempt in (lock.check, lock.acquire):
        with pytest.raises(RunLockedError) as refused:
            attempt()
        message = str(refused.value)
        assert "\n" not in message and f"pid {live_pid} on host {socket.gethostname()}" in message
        assert "started 2026-01-02T03:04:05+00:00" in message
        assert "command: python -m monai.bundle run training" in message
        assert str(tmp_path / "models" / "run.lock") in message  # what to delete if that run is known dead
    assert not lock.held and (tmp_path / "models" / "run.lock").read_bytes() == before
    lock.release()  # not ours: never removed
    assert (tmp_path / "models" / "run.lock").read_bytes() == before


def test_a_lock_of_another_host_is_respected(tmp_path):
    _write_lock(tmp_path, _dead_pid(), host="some-other-host")  # its pid means nothing here
    with pytest.raises(RunLockedError, match="on host some-other-host"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("left_by", ["killed run", "reused pid", "this pid earlier"])
def test_a_lock_left_by_a_run_that_is_gone_is_taken_over_and_logged(tmp_path, caplog, live_pid, left_by):
    pid = {"killed run": _dead_pid(), "reused pid": live_pid, "this pid earlier": os.getpid()}[left_by]
    _write_lock(tmp_path, pid, pid_start="1")  # a reused pid: alive, but started at another time
    lock = RunLock(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert lock.check() is not None  # stale: not refused
        lock.acquire()
    assert f"taking over the lock of a run that is no longer alive (pid {pid} on host" in caplog.text
    holder = lock_holder(tmp_path / "run.lock")
    assert lock.held and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert "pytest" in holder["command"] or "python" in holder["command"]
    assert sorted(os.listdir(tmp_path)) == ["run.lock"]  # the stale lock moved aside and deleted
    with pytest.raises(RunLockedError):  # held by this process: a second lock object of it is refused
        RunLock(tmp_path).acquire()
    lock.release()
    assert os.listdir(tmp_path) == []


def _engine(guard: RunGuard, step=lambda engine: None) -> Engine:
    engine = Engine(lambda e, batch: step(e))
    guard.attach(engine)
    return engine


def _guard(root, **kwargs) -> RunGuard:
    return RunGuard(root / "models", root / "eval", root / "export", root / "data", **kwargs)


def test_the_lock_is_held_while_training_and_released_after_every_completed_handler(tmp_path):
    guard = _guard(tmp_path)
    seen = []
    engine = _engine(guard, lambda e: seen.append(lock_holder(tmp_path / "models" / "run.lock")))
    engine.add_event_handler(Events.COMPLETED, lambda e: seen.append(lock_holder(tmp_path / "models" / "run.lock")))
    engine.run([0, 1], max_epochs=1)
    assert len(seen) == 3 and all(h is not None and h["pid"] == os.getpid() for h in seen)  # held until the end
    assert not (tmp_path / "models" / "run.lock").exists()


@pytest.mark.parametrize("way_out", ["exception", "keyboard interrupt", "terminate", "terminate skipping completed"])
def test_the_lock_is_released_on_every_way_out_of_the_run(tmp_path, way_out):
    guard = _guard(tmp_path)

    def step(engine):
        assert guard.lock.held
        if way_out == "exception":
            raise FloatingPointError("non-finite loss")
        if way_out == "keyboard interrupt":
            raise KeyboardInterrupt
        engine.terminate(skip_completed=way_out.endswith("completed"))

    engine = _engine(guard, step)
    if way_out in ("exception", "keyboard interrupt"):
        with pytest.raises((FloatingPointError, KeyboardInterrupt)):  # re-raised, not swallowed by the handler
            engine.run([0, 1], max_epochs=1)
    else:
        engine.run([0, 1], max_epochs=1)
    assert not guard.lock.held and not (tmp_path / "models" / "run.lock").exists()
    _engine(_guard(tmp_path), lambda e: None).run([0], max_epochs=1)  # the folder is free again


def test_a_live_holder_stops_the_trainer_at_start_before_any_handler_writes(tmp_path, live_pid):
    before = _write_lock(tmp_path / "models", live_pid)
    guard = _guard(tmp_path)
    engine = _engine(guard)
    written = []
    engine.add_event_handler(Events.STARTED, lambda e: written.append("checkpoint folder touched"))
    with pytest.raises(RunLockedError, match=f"pid {live_pid}"):
        engine.run([0], max_epochs=1)
    assert written == [] and (tmp_path / "models" / "run.lock").read_bytes() == before


def _finished_run(root):
    (root / "models").mkdir(parents=True)
    for name in ("resume.pt", "model_last.pt", "model.pt"):
        torch.save({"w": torch.ones(1)}, root / "models" / name)
    (root / "eval").mkdir()
    (root / "eval" / "history.csv").write_text("iteration,loss\n1.0,0.5\n")
    (root / "eval" / "summary.md").write_text("# an evaluation\n")
    (root / "export" / "data" / "models").mkdir(parents=True)  # export_name(<root>/data) is "data"
    (root / "export" / "data" / "models" / "model.pt").write_bytes(b"weights")
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_fresh_run_over_a_finished_one_is_refused_naming_the_ways_on(tmp_path):
    files = _finished_run(tmp_path)
    with pytest.raises(FileExistsError) as refused:
        _guard(tmp_path).check()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{tmp_path} already holds a training run (models/resume.pt, ")
    assert "models/model_last.pt, models/model.pt, eval/history.csv, export/data)" in message
    assert "--resume auto" in message and "--overwrite True" in message and "nothing was written" in message
    (tmp_path / "models" / "resume.pt").unlink()  # nothing to continue: only the overwrite is offered
    with pytest.raises(FileExistsError, match=r"cannot be continued \(no models/resume.pt\): replace it with --over"):
        _guard(tmp_path).check()
    _guard(tmp_path, resume=str(tmp_path / "elsewhere.pt")).check()  # a resume continues: not refused
    del files[tmp_path / "models" / "resume.pt"]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_overwrite_deletes_the_earlier_run_only_when_the_trainer_starts(tmp_path):
    files = _finished_run(tmp_path)
    guard = _guard(tmp_path, overwrite=True)
    guard.check()  # accepted, nothing deleted yet: a refusal or a failure until the start keeps the earlier run
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    left = []
    files = lambda: sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())  # noqa: E731
    _engine(guard, lambda e: left.extend(files())).run([0], max_epochs=1)
    assert left == ["eval/summary.md", "models/run.lock"]  # checkpoints, history and export gone; reports kept


def test_check_outputs_removes_only_the_empty_folders_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    check_outputs({"output_dir": tmp_path / "run" / "eval", "predictions": tmp_path / "run" / "eval" / "predictions",
                   "ckpt_dir": tmp_path / "run" / "models", "existing": tmp_path / "kept"})  # fmt: skip
    (tmp_path / "run" / "models" / "model.pt").write_bytes(b"written")
    removed = [p for p in remove_empty_created() if tmp_path in p.parents]  # (other tests' folders are not ours)
    assert sorted(p.name for p in removed) == ["eval", "predictions"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept", "model.pt", "models", "run"]
