"""Creating tsmeter's files and directories privately: files 0600, directories 0700.

State, outbox, notification-log and journal files can hold webhook tokens and usage data, so
what tsmeter creates is readable by its owner only, whatever the process umask allows. The
modes are given at creation (``os.open``/``os.mkdir`` with the private mode), never by
changing the process umask, since tsmeter runs as a library inside other programs. Files and
directories that already exist are left as they are: their owner chose their mode. SQLite
gives a database's ``-wal``, ``-shm`` and ``-journal`` files the database file's mode, so
creating the database file first with 0600 makes its companions private too.

Example::

    private_file(private_dir(Path("~/.local/share/tsmeter").expanduser()) / "tsmeter.db")
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "open_private",
    "private_dir",
    "private_file",
    "replaced_whole",
]

PRIVATE_FILE_MODE = 0o600
"""The mode of every file tsmeter creates."""

PRIVATE_DIR_MODE = 0o700
"""The mode of every directory tsmeter creates."""


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents with mode 0700; return it as a Path.

    Directories that exist already keep their mode.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as top:
    ...     made = private_dir(Path(top) / "a" / "b")
    ...     oct(made.stat().st_mode & 0o777), oct(made.parent.stat().st_mode & 0o777)
    ('0o700', '0o700')
    """
    target = Path(path).expanduser()
    missing: list[Path] = []
    probe = target
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
    return target


def private_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist (its directory too, 0700);
    return whether it was created. An existing file is neither changed nor opened.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as top:
    ...     made = private_file(Path(top) / "state.db"), private_file(Path(top) / "state.db")
    ...     made, oct((Path(top) / "state.db").stat().st_mode & 0o777)
    ((True, False), '0o600')
    """
    target = Path(path).expanduser()
    private_dir(target.parent)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def open_private(path: str | os.PathLike[str]) -> TextIO:
    """Open ``path`` for appending text, creating it with mode 0600 if it is missing (a lock
    file, for example); an existing file keeps its mode. The caller closes the handle.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as top:
    ...     with open_private(Path(top) / "x.lock") as handle:
    ...         oct(os.fstat(handle.fileno()).st_mode & 0o777)
    '0o600'
    """
    fd = os.open(
        Path(path).expanduser(),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
        PRIVATE_FILE_MODE,
    )
    return os.fdopen(fd, "a", encoding="utf-8")


@contextmanager
def replaced_whole(path: str | os.PathLike[str], *, newline: str | None = None) -> Iterator[TextIO]:
    """A text file that becomes ``path`` whole when the block ends: written beside it under a
    private temporary name (0600, or the mode of the file it replaces, which its owner
    chose), then renamed over it. If the block fails, the temporary file is removed and
    ``path`` is as it was: a reader never sees half an export or report.

    >>> with tempfile.TemporaryDirectory() as top:
    ...     with replaced_whole(Path(top) / "out.txt") as out:
    ...         _ = out.write("all of it")
    ...     (Path(top) / "out.txt").read_text(), oct((Path(top) / "out.txt").stat().st_mode & 0o777)
    ('all of it', '0o600')
    """
    target = Path(path)
    fd, partial = tempfile.mkstemp(  # mode 0600, beside the target so the rename is atomic
        prefix=f".{target.name}.", suffix=".partial", dir=target.parent
    )
    try:
        with open(fd, "w", encoding="utf-8", newline=newline) as out:
            with suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
            yield out
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
