"""Atomic file writes, the one implementation every writer in the package uses.

A file is written to a uniquely named temp file in the target's directory (created
with ``O_EXCL`` and mode ``0o666``, so the user's umask applies: never 0600), fsynced,
then ``os.replace``d onto the target (or hard-linked, when overwriting is refused, so
a file that appeared meanwhile is never clobbered). Readers never see a partial file;
a failed or abandoned write leaves no temp file behind. Only a regular file is ever replaced
(never a directory or a device such as ``/dev/null``), and every OS failure (a missing or
read-only directory, a full disk) is one :class:`MmarError` naming the target.

Two forms::

    atomic_write(path, lambda tmp: sf.write(tmp, audio, sr), tmp_suffix=".wav")   # a writer that wants a path

    with AtomicFile(path, overwrite=False) as f:      # a stream: f is an open binary file
        f.write(b"...")                                # clean exit commits, an exception aborts
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Union

from .errors import MmarError

__all__ = ["AtomicFile", "atomic_write", "check_target", "write_json"]

_TRIES = 16
_TEMP_NAME_CHARS = 64  # of the target's name, in the temp name: a 255-byte name still gets a temp sibling


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse a ``path`` that exists unless ``overwrite``, and anything there but a regular file."""
    if os.path.lexists(path):
        if not overwrite:
            raise MmarError(f"{path} exists; use -f to overwrite")
        if not os.path.isfile(path):
            raise MmarError(f"{path} exists and is not a regular file; refusing to replace it")


def _cannot_write(path: Path, e: OSError) -> MmarError:
    return MmarError(f"cannot write {path}: {e.strerror or e}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_LIVE: set[Path] = set()  # temp files created and not yet published or removed
_DEFERRED = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}


def remove_live_temps() -> None:
    """Remove every temp file still being written: for a process unwinding from a signal, whose
    exception may have struck between a temp file's creation and the code that would clean it."""
    for tmp in list(_LIVE):
        _remove(tmp)


def _remove(tmp: Path) -> None:
    """Delete an unpublished temp file and forget it."""
    tmp.unlink(missing_ok=True)
    _LIVE.discard(tmp)


def _create_temp(path: Path, tmp_suffix: str) -> tuple[Path, int]:
    """A new, empty, uniquely named sibling of ``path``: (its path, an fd open for writing), recorded
    in ``_LIVE`` with signals held back, so that no signal falls between creating and recording it."""
    block = hasattr(signal, "pthread_sigmask")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED) if block else None
    try:
        for _ in range(_TRIES):
            tmp = path.with_name(f".{path.name[:_TEMP_NAME_CHARS]}.{secrets.token_hex(6)}.tmp{tmp_suffix}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                continue
            except OSError as e:
                raise _cannot_write(path, e) from None
            _LIVE.add(tmp)
            return tmp, fd
        raise MmarError(f"cannot write {path}: no free temp file name after {_TRIES} tries")  # pragma: no cover
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fsync_dir(directory: Path) -> None:
    try:  # make the rename durable; not possible on every platform
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``path`` atomically (refusing an existing ``path`` unless
    ``overwrite``, and anything there but a regular file)."""
    if overwrite:
        check_target(path, overwrite)
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # atomic "create if absent"
        except FileExistsError:
            raise MmarError(f"{path} exists; use -f to overwrite") from None
        except OSError:  # no hard links here (some network or FAT file systems): check, then rename
            if path.exists():
                raise MmarError(f"{path} exists; use -f to overwrite") from None
            os.replace(tmp, path)
        else:
            tmp.unlink()
    _LIVE.discard(tmp)
    _fsync_dir(path.parent)


class AtomicFile:
    """A binary file that appears at ``path`` only when :meth:`commit` succeeds.

    Use as a context manager (``as f`` gives the open binary file; a clean exit commits, an
    exception aborts) or call :meth:`commit` / :meth:`abort` yourself. The directory must exist.

    Raises:
        MmarError: ``path`` exists and ``overwrite`` is false (checked on open and again on
            commit), is not a regular file, or cannot be written (an OSError on the way).
    """

    def __init__(self, path: Union[str, os.PathLike], overwrite: bool = True, tmp_suffix: str = ""):
        self.path = Path(path)
        self.overwrite = overwrite
        check_target(self.path, overwrite)
        self.tmp, fd = _create_temp(self.path, tmp_suffix)
        self.file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        if self.file is None:
            raise ValueError(f"{self.path}: the atomic file is already closed")
        try:
            return self.file.write(data)
        except OSError as e:
            self.abort()
            raise _cannot_write(self.path, e) from None

    def commit(self) -> Path:
        """Flush, fsync, close and move the temp file onto ``path``; aborts on any failure."""
        try:
            if self.file is None:
                raise ValueError(f"{self.path}: the atomic file is already closed")
            f, self.file = self.file, None
            with f:
                f.flush()
                os.fsync(f.fileno())
            _publish(self.tmp, self.path, self.overwrite)
        except OSError as e:
            self.abort()
            raise _cannot_write(self.path, e) from None
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard what was written (idempotent); ``path`` is left as it was."""
        if self.file is not None:
            f, self.file = self.file, None
            f.close()
        _remove(self.tmp)

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def atomic_write(path: Path, write: Callable[[Path], None], tmp_suffix: str = "") -> Path:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path``; readers never see a partial file, and a
    failed write leaves no temp file. ``tmp_suffix`` keeps a format-giving extension (".wav").
    Missing parent directories are created; an existing regular file at ``path`` is replaced.
    An OSError from ``write`` or on the way (full disk, read-only place) becomes :class:`MmarError`."""
    path = Path(path)
    check_target(path, overwrite=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path, e) from None
    tmp, fd = _create_temp(path, tmp_suffix)
    os.close(fd)  # the callback opens it by name
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) replace the file with a 0600 one
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _publish(tmp, path, overwrite=True)
    except OSError as e:
        _remove(tmp)
        raise _cannot_write(path, e) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def write_json(data: dict, path: Path) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1) + "\n"))
