"""Private local state: where it lives, and refusing a place another local user could touch.

State (the spool, checkpoints) lives under the user's state directory,
``$XDG_STATE_HOME/membrane-otel`` else ``~/.local/state/membrane-otel`` (the XDG base
directory spec), created 0700. A directory we are told to use elsewhere (the seed's
``/tmp/membrane-stimuli-spool``) gets the same checks before anything is read from or written
to it: it must be a real directory (not a symlink another user could point anywhere), owned
by us, and writable by nobody else. Otherwise another user on the machine could delete our
batches, plant forged ones, or plant a FIFO that hangs the reader.

Secrets (tokens, keys) come from the environment or a file, never from the command line
(any local user can read another's ``argv`` with ``ps``): :func:`read_secret_file`.

Standard library only: the spool and the ledger import this.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnsafePathError", "private_dir", "read_secret_file", "state_dir"]

APP = "membrane-otel"


class UnsafePathError(PermissionError):
    """A path another local user could control. ``str()`` is one line naming path and problem."""

    def __init__(self, what: str, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"refusing {what} {self.path}: {problem}")

    def __str__(self) -> str:
        return str(self.args[0])


def state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/membrane-otel``, else ``~/.local/state/membrane-otel`` (not created)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    # The spec: a relative value is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / APP


def check_dir(path: str | os.PathLike[str], what: str = "directory") -> os.stat_result:
    """Raise :class:`UnsafePathError` unless ``path`` is our own real directory, writable by us only."""
    st = os.lstat(path)  # FileNotFoundError goes to the caller, which may create it
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(what, path, "it is a symlink (another user could point it anywhere)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(what, path, "it is not a directory")
    me = os.geteuid()
    if st.st_uid != me:
        raise UnsafePathError(what, path, f"it is owned by uid {st.st_uid}, not by you (uid {me})")
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        raise UnsafePathError(
            what, path, f"it is writable by other users (mode {mode:04o}); chmod go-w it or choose another"
        )
    return st


def private_dir(path: str | os.PathLike[str], what: str = "directory") -> Path:
    """``path`` as a checked private directory, created 0700 (with its parents) if missing."""
    p = Path(path)
    try:
        check_dir(p, what)
    except FileNotFoundError:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass  # someone made it meanwhile: the check below judges it
        check_dir(p, what)
    return p


def read_secret_file(path: str | os.PathLike[str], what: str = "token file") -> str:
    """The secret in ``path``: its first line, stripped; one clear line if unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePathError(what, path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(what, path, "it is not a regular file")
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").strip().splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise UnsafePathError(what, path, "it is empty")
    return secret
