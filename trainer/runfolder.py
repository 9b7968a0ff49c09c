"""What keeps a grape-train run folder trustworthy: one writer, verified checkpoints, exact metrics.

- `RunLock`: one process writes a run folder at a time. The lock is an `fcntl.flock` on
  `<run>/.lock`, which also records the owner's pid, host and start time for the message a
  second process gets. The kernel drops the lock when its owner dies (however it dies), so a
  lock left by a killed run is stale by construction and the next run simply takes it.
- Checkpoint manifests: every checkpoint folder gets `MANIFEST.sha256` (sha256sum format, so
  `sha256sum -c MANIFEST.sha256` checks it by hand too) listing every file's digest; resuming
  verifies the newest checkpoint against it and names what is wrong in one line.
  `--resume-from previous` sets corrupt checkpoints aside (under checkpoints/.corrupt/) and
  continues from the newest one that verifies.
- Metrics: each checkpoint records how many metrics.jsonl lines belong to the run up to it; a
  resume cuts the file back to that many lines, so steps logged after the checkpoint by the
  killed process are not repeated.
- Write failures (a full disk, a file-size limit, permissions): one line naming the path and
  the errno, whichever library raised it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno as errno_codes
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"
MANIFEST_FILE = "MANIFEST.sha256"
CORRUPT_DIR = ".corrupt"
RESUME_CHOICES = ("latest", "previous")


class RunFolderError(Exception):
    """A run folder that cannot be used as asked; the message is one line for the user (exit 1)."""


class RunLockedError(RunFolderError):
    """Another live process holds the run folder."""


class CorruptCheckpointError(RunFolderError):
    """The newest checkpoint fails verification; `previous` is the newest one that passes (or None)."""

    def __init__(self, message: str, folder: Path, previous: int | None) -> None:
        super().__init__(message)
        self.folder = folder
        self.previous = previous


class WriteFailedError(RunFolderError, OSError):
    """An OS-level write failure (disk full, file too large, no permission...), path and errno named."""


# ---------------------------------------------------------------------- one writer
class RunLock:
    """Exclusive ownership of a run folder for the life of a `with` block.

    Creates the folder if needed; when the block ends without the run having written anything
    else, the folder it created is removed again, so a run refused before it started leaves
    nothing behind.
    """

    def __init__(self, run_dir: Path, echo: Callable[[str], None] = print) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.echo = echo
        self._fd: int | None = None
        self._created_dir = False

    def __enter__(self) -> RunLock:
        self._created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WriteFailedError(describe_write_failure(error, self.run_dir)) from error
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.run_dir} is in use by another grape-train run ({_describe_owner(owner)}); "
                    "wait for it to finish or choose another --output-dir"
                ) from None
            # A previous owner may have removed the lock file between our open and flock; then we
            # hold a lock on a file nobody else will see, so try again with the current one.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        stale = _read_owner(fd)
        if stale.get("pid") and stale.get("pid") != os.getpid():
            self.echo(
                f"{self.run_dir}: taking over the lock left by {_describe_owner(stale)}, which is no longer running"
            )
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is None:
            return
        if self._created_dir and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            # Nothing but the lock was written: leave no trace of a run that never started.
            # Unlinking before unlocking is what the inode check in __enter__ guards against.
            os.unlink(self.path)
            os.rmdir(self.run_dir)
        else:
            os.ftruncate(self._fd, 0)  # no owner: a later reader sees a free folder
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe_owner(owner: dict[str, Any]) -> str:
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')} on host {owner.get('host')}, since {owner.get('started')}"


# ---------------------------------------------------------------------- checkpoint manifests
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Digest every file under `folder` into folder/MANIFEST.sha256 (written last, atomically)."""
    from grape_dsl.util.atomic import atomic_write_text

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    lines = [f"{_sha256(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    target = folder / MANIFEST_FILE
    atomic_write_text(target, "\n".join(lines) + "\n")
    return target


def verify_checkpoint(folder: Path, required: tuple[str, ...] = (), within: str | None = None) -> str | None:
    """What is wrong with a checkpoint folder, as one phrase, or None when it verifies.

    With a manifest every listed file must exist with its digest (only those under the
    subfolder `within` when given: grape-eval needs the policy, not the optimizer state). A
    folder without one was written before manifests existed: then only the `required` files are
    checked (present and not empty), and loading them is the remaining test.
    """
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        for name in required:
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size == 0:
                return f"{name} is empty"
        return None
    try:
        entries = [line.split("  ", 1) for line in manifest.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, UnicodeDecodeError) as error:
        return f"{MANIFEST_FILE} is unreadable ({error})"
    if not entries or any(len(entry) != 2 or not re.fullmatch(r"[0-9a-f]{64}", entry[0]) for entry in entries):
        return f"{MANIFEST_FILE} is damaged"
    if within is not None:
        entries = [(digest, name) for digest, name in entries if name.startswith(f"{within}/")]
    for digest, name in entries:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size == 0:
            return f"{name} is empty"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum (truncated or overwritten)"
    return None


def select_checkpoint(
    run_dir: Path,
    checkpoints: dict[int, Path],
    resume_from: str,
    required: tuple[str, ...],
    check_loads: Callable[[Path], str | None],
    echo: Callable[[str], None],
) -> int:
    """The iteration to resume after: the newest checkpoint, verified; -1 when none is left.

    `check_loads(folder)` is the last test of a checkpoint without a manifest (None: it loads).
    With resume_from "latest" a corrupt newest checkpoint is a CorruptCheckpointError naming it
    and the newest complete one; with "previous" corrupt ones are moved to checkpoints/.corrupt/
    and the newest that verifies is used.
    """
    if resume_from not in RESUME_CHOICES:
        raise ValueError(f"resume_from must be one of {RESUME_CHOICES}, got {resume_from!r}")
    remaining = dict(checkpoints)
    while remaining:
        newest = max(remaining)
        folder = remaining[newest]
        problem = verify_checkpoint(folder, required)
        if problem is None and not (folder / MANIFEST_FILE).is_file():
            problem = check_loads(folder)
        if problem is None:
            return newest
        if resume_from == "latest":
            previous = next(
                (k for k in sorted(remaining, reverse=True)[1:] if verify_checkpoint(remaining[k], required) is None),
                None,
            )
            offer = (
                f"continue from checkpoint iter_{previous:04d} with --resume-from previous"
                if previous is not None
                else "no earlier checkpoint verifies; --resume-from previous starts the run over"
            )
            raise CorruptCheckpointError(f"checkpoint {folder} is corrupt: {problem}; {offer}", folder, previous)
        aside = folder.parent / CORRUPT_DIR / f"{folder.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        aside.parent.mkdir(exist_ok=True)
        os.replace(folder, aside)
        echo(f"checkpoint {folder.name} is corrupt ({problem}); moved it to {aside}")
        del remaining[newest]
    return -1


# ---------------------------------------------------------------------- metrics
def truncate_metrics(path: Path, keep_lines: int) -> None:
    """Cut metrics.jsonl back to its first `keep_lines` complete lines (atomically)."""
    from grape_dsl.util.atomic import atomic_write

    if not path.is_file():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is a line cut short by a kill
    if len(complete) == keep_lines and lines[-1] == b"":
        return
    with atomic_write(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in complete[:keep_lines]))


def keep_metrics(path: Path, keep_lines: int | None, max_step: int) -> None:
    """Drop what metrics.jsonl holds beyond a checkpoint: past its line count, or (for a
    checkpoint written before line counts were kept) every line logged after its step."""
    if keep_lines is not None:
        truncate_metrics(path, keep_lines)
        return
    if not path.is_file():
        return
    kept = 0
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            if json.loads(line)["step"] > max_step:
                break
        except (ValueError, KeyError, TypeError):
            break
        kept += 1
    truncate_metrics(path, kept)


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


# ---------------------------------------------------------------------- write failures
_RUST_IO_CODE = re.compile(r"(?:os error |code: )(\d+)")


def _errno_of(error: BaseException) -> int | None:
    if isinstance(error, OSError) and error.errno:
        return error.errno
    match = _RUST_IO_CODE.search(str(error))  # Rust's io::Error, as safetensors words it: "... (os error 28)"
    return int(match.group(1)) if match else None


def describe_write_failure(error: BaseException, path: str | os.PathLike) -> str:
    """'cannot write PATH: [Errno 28] ENOSPC: No space left on device' for any library's write error."""
    code = _errno_of(error)
    where = getattr(error, "filename", None) or path
    if code is None:
        return f"cannot write {where}: {error}"
    name = errno_codes.errorcode.get(code, "?")
    return f"cannot write {where}: [Errno {code}] {name}: {os.strerror(code)}"


def _is_write_failure(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return True
    if type(error).__name__ == "SafetensorError":
        return _errno_of(error) is not None
    return isinstance(error, RuntimeError) and ("file write failed" in str(error) or _errno_of(error) is not None)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OS-level failure while writing `path` into a one-line WriteFailedError."""
    try:
        yield
    except Exception as error:
        if not _is_write_failure(error):
            raise
        raise WriteFailedError(
            f"{describe_write_failure(error, path)}; nothing partial is kept: "
            "the same command resumes from the last complete checkpoint"
        ) from error


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through Python's own file API, so a failed write is an OSError with its errno."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
