"""Writing files so that a failure never leaves a half-written or lost file.

Every file dlum writes goes through :func:`atomic_path`: the content is written to a temporary
file in the same folder, then renamed over the target (``os.replace``, atomic on POSIX and
Windows). A command that fails midway leaves any earlier file exactly as it was.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
>>> with atomic_path(target) as tmp:
...     _ = tmp.write_text("kept")
>>> target.read_text()
'kept'
>>> oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
True
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target`` to write into; renamed over ``target`` when the block
    ends without an exception, removed otherwise. The suffix is kept (some writers need it)."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix,
                               dir=target.parent if str(target.parent) else ".")
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file readable by its owner only; the result gets the permissions the
    # file had, or those a plain open() would give it.
    os.chmod(tmp_path, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
