"""Atomic, durable writes: a reader sees the old file (or folder) or the complete new one, never a part.

Data goes to a temporary sibling in the target's own directory (same filesystem, so the final
os.replace is atomic), is flushed and fsynced, renamed over the target, and the directory is
fsynced so the rename itself survives a power cut. If anything fails on the way (a full disk
raises OSError from write, flush or replace) the temporary is removed and the error propagates;
the target is untouched.

A new file gets the permissions a plain open() would give it (0666 less the umask), not the
0600 of a temporary file; a replaced file keeps its own. Writing through a symlink replaces the
file it points to, so the link stays a link.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_directory",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
]


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (os.umask alone must
    set it to read it, which races with threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_directory(directory: Path) -> None:
    """Make a rename or creation inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself is already synced
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing (`mode` "w" or "wb"); on success it replaces `path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', got {mode!r}")
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        permissions = target.stat().st_mode & 0o7777
    except OSError:
        permissions = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=encoding if text else None, newline=newline if text else None) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> None:
    with atomic_write(path, "w", encoding=encoding, newline=newline) as stream:
        stream.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as stream:
        stream.write(data)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """`data` as JSON (no trailing newline, as json.dump writes it)."""
    atomic_write_text(path, json.dumps(data, indent=indent))


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, deepest first, so the folder is durable before it is renamed."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(folder, name)
            if file.is_symlink():
                continue
            with open(file, "rb") as stream:
                os.fsync(stream.fileno())
        _fsync_directory(Path(folder))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name; it replaces `path` in one rename only when complete.

    The caller writes every file into the yielded folder. The staging folder has a unique name
    (two writers never share one) and the permissions of a plain mkdir. An existing `path` is
    moved aside first and deleted after the new one is in place; if the rename fails, the old
    folder is put back. A crash at any point leaves the old folder or the new one at `path`
    (plus, at worst, a hidden `.name.*.tmp` / `.name.*.old` sibling that readers ignore).
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    retired: Path | None = None
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        yield staging
        _fsync_tree(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, retired / "old")
        os.replace(staging, target)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None and (retired / "old").exists() and not target.exists():
            os.replace(retired / "old", target)
        raise
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
