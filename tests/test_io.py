"""The one atomic writer (crln_monai.io): a file or a folder's entries are replaced whole or not at all."""

import os
import stat

import pytest

from crln_monai.io import atomic_path, atomic_write, remove_stale_temporaries, staged_folder


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _contents(folder):
    """Relative path → bytes (None for a folder) of everything under ``folder``, hidden entries included."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))
    }


def test_atomic_write_takes_bytes_text_or_a_writer_and_leaves_no_temporary(tmp_path):
    assert atomic_write(tmp_path / "sub" / "a.bin", b"\x00\x01") == tmp_path / "sub" / "a.bin"  # folder made
    atomic_write(tmp_path / "b.txt", "héllo\n", encoding="utf-8")
    atomic_write(tmp_path / "c.csv", lambda f: f.write("x,y\n"), mode="w", newline="")
    atomic_write(tmp_path / "d.bin", b"synced", fsync=True)
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.csv").read_bytes() == b"x,y\n" and (tmp_path / "d.bin").read_bytes() == b"synced"
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.csv", "d.bin", "sub"]


def test_a_failed_write_keeps_the_previous_file_byte_for_byte(tmp_path):
    path = atomic_write(tmp_path / "model.pt", b"the previous checkpoint")

    def half_then_fail(f):
        f.write(b"half of the new one")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:  # an interrupt too
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) == ["model.pt"]


def test_files_follow_the_umask_not_mkstemp(tmp_path, umask_027):
    path = atomic_write(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    os.umask(0o002)
    atomic_write(path, "[]")  # the replacement gets this umask's mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    with atomic_path(tmp_path / "seg.nii.gz", suffix=".nii.gz") as tmp:  # a writer that takes a file name
        assert tmp.name.startswith(".seg.nii.gz.") and tmp.name.endswith(".tmp.nii.gz") and tmp.parent == tmp_path
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o664
        tmp.write_bytes(b"label map")
    assert (tmp_path / "seg.nii.gz").read_bytes() == b"label map"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "seg.nii.gz"]


def test_stale_temporaries_of_one_file_are_removed_and_nothing_else(tmp_path):
    keep = ["resume.pt", ".resume.pt.notes", ".model.pt.abc123.tmp", ".resume.pt..tmp", "other.tmp"]
    stale = [".resume.pt.0a1b2c3d4e5f.tmp", ".resume.pt.k2j3_x9.tmp"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path / "resume.pt")) == stale
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


def test_staged_folder_moves_entries_into_place_last_ones_last(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    (out / "cases").mkdir()
    (out / "cases" / "old.txt").write_text("old")
    (out / "old_figure.png").write_text("old")
    (out / ".report-killed.tmp" / "x").mkdir(parents=True)  # left by a killed process: removed
    (out / ".other-killed.tmp").mkdir()  # another label's: kept
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real_replace(a, b)))
    with staged_folder(out, "report", last=("summary.json",), stale=("*_figure.png",)) as stage:
        assert stage.parent == out and stage.name.startswith(".report-") and stage.name.endswith(".tmp")
        assert not (out / ".report-killed.tmp").exists()
        (stage / "summary.json").write_text("{}")
        (stage / "b.csv").write_text("b")
        (stage / "cases").mkdir()
        (stage / "cases" / "new.txt").write_text("new")  # a folder is replaced whole
    assert moved == ["b.csv", "summary.json"]
    assert _contents(out) == {
        ".other-killed.tmp": None, "b.csv": b"b", "cases": None, "cases/new.txt": b"new", "notes.txt": b"the user's",
        "summary.json": b"{}",
    }  # fmt: skip


def test_staged_folder_leaves_the_folder_as_it_was_on_failure(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.json").write_text("old")
    (out / "imagesTr").mkdir()
    (out / "imagesTr" / "a.nii.gz").write_bytes(b"old a")
    before = _contents(out)
    with pytest.raises(KeyboardInterrupt), staged_folder(out, "prepare", last=("dataset.json",)) as stage:
        (stage / "imagesTr").mkdir()
        (stage / "imagesTr" / "a.nii.gz").write_bytes(b"new a")
        raise KeyboardInterrupt
    assert _contents(out) == before  # no temporary folder left either
    missing = tmp_path / "new" / "deeper"
    with pytest.raises(ValueError, match="bad case"), staged_folder(missing, "prepare") as stage:
        (stage / "dataset.json").write_text("half")
        raise ValueError("bad case")
    assert not (tmp_path / "new").exists()  # the folders this call made are removed again


def test_staged_folder_leaves_entries_holding_the_same_files_alone(tmp_path):
    out = tmp_path / "data"
    (out / "imagesTr").mkdir(parents=True)
    (out / "imagesTr" / "a.nii.gz").write_bytes(b"a")
    os.utime(out / "imagesTr", (1, 1))
    with staged_folder(out, "prepare") as stage:
        (stage / "imagesTr").mkdir()
        os.link(out / "imagesTr" / "a.nii.gz", stage / "imagesTr" / "a.nii.gz")  # the same file: not swapped
    assert (out / "imagesTr").stat().st_mtime == 1 and sorted(os.listdir(out)) == ["imagesTr"]
