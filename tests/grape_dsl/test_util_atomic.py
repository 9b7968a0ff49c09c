"""grape_dsl.util.atomic: all-or-nothing files and folders, ordinary permissions, links kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grape_dsl.util.atomic import (
    atomic_directory,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_current_umask_reads_the_process_umask(umask_027):
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # reading it did not change it


def test_new_file_gets_plain_open_permissions_and_a_replaced_file_keeps_its_own(tmp_path, umask_027):
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x\n")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask_027 == 0o640
    kept = tmp_path / "kept.txt"
    kept.write_text("old\n")
    kept.chmod(0o604)
    atomic_write_text(kept, "new\n")
    assert kept.read_text() == "new\n" and kept.stat().st_mode & 0o777 == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.txt", "kept.txt"]


def test_writes_text_bytes_json_and_creates_missing_folders(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\xff")
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2]})
    atomic_write_text(tmp_path / "d.txt", "é\r\n", newline="")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "c.json").read_text() == json.dumps({"k": [1, 2]}, indent=2)
    assert (tmp_path / "d.txt").read_bytes() == "é\r\n".encode()


def test_a_symlink_stays_a_link_to_the_new_text(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_a_failure_while_writing_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as stream:
        stream.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
    with pytest.raises(ValueError, match="modes"), atomic_write(target, "a"):
        pass


def test_atomic_directory_replaces_the_whole_folder_with_plain_mkdir_permissions(tmp_path, umask_027):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as staging:
        (staging / "old_only.txt").write_text("1")
    with atomic_directory(target) as staging:
        assert staging != target and staging.name.startswith(".ckpt.")
        (staging / "weights.bin").write_bytes(b"w")
        (staging / "sub").mkdir()
        (staging / "sub" / "meta.json").write_text("{}")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "sub",
        "sub/meta.json",
        "weights.bin",
    ]
    assert target.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_directory_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("new")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_killed_writer_leaves_the_old_content(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("old")
        body = "with atomic_write(target) as s:\n    s.write('half'); s.flush(); os._exit(9)\n"
    else:
        target.mkdir()
        (target / "a.txt").write_text("old")
        body = "with atomic_directory(target) as d:\n    (d / 'a.txt').write_text('new'); os._exit(9)\n"
    script = (
        "import os, sys\nfrom pathlib import Path\nfrom grape_dsl.util.atomic import atomic_write, atomic_directory\n"
        f"target = Path({str(target)!r})\n" + body
    )
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 9
    assert (target.read_text() if kind == "file" else (target / "a.txt").read_text()) == "old"
