"""Reading a .grc file from disk, bounded: only regular files, never more than the size limit.

`open()` on a named pipe waits for a writer forever, and a device such as /dev/zero never ends;
a path with a NUL byte makes the OS layer raise ValueError. Each of these becomes an
`UnreadableSource` (an OSError) whose message says what the path is, so every caller reports
it as the same GRC302 diagnostic as a missing file.
"""

from __future__ import annotations

import os
import stat

# UTF-8 needs at most 4 bytes a character, plus a 3-byte byte-order mark; anything longer is
# over the parser's character limit whatever it contains.
BYTES_PER_CHAR = 4
BOM_BYTES = 3


class UnreadableSource(OSError):
    """A path that is not a readable regular .grc file; str() is the reason, in words."""


def max_source_bytes() -> int:
    from grape_dsl.parser import MAX_SOURCE_CHARS

    return BYTES_PER_CHAR * MAX_SOURCE_CHARS + BOM_BYTES


def read_source_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the regular file `path`. Raises FileNotFoundError, or UnreadableSource for a
    NUL in the path, a directory, a device, pipe or socket, or a file over the size limit."""
    text_path = os.fspath(path)
    if "\0" in str(text_path):
        raise UnreadableSource(f"the path {str(text_path)!r} contains a NUL byte")
    limit = max_source_bytes()
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    fd = os.open(text_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableSource(f"{text_path} is a directory, not a .grc file")
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableSource(
                f"{text_path} is not a regular file (a device, pipe or socket); "
                ".grc files are read only from regular files"
            )
        if info.st_size > limit:
            raise UnreadableSource(
                f"{text_path} is too large: {info.st_size:,} bytes (a .grc file may have at most {limit:,} bytes)"
            )
        chunks = []
        left = limit + 1  # the file may have grown since fstat
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UnreadableSource(f"{text_path} is too large: more than {limit:,} bytes")
        return data
    finally:
        os.close(fd)
