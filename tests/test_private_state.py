"""Private local state: the spool refuses a place another local user could touch; tokens stay off argv.

The attacks are those of issue 15, simulated as far as one user can: another user's
directory is a directory chowned to uid 65534 (needs root, else skipped), a world-writable
one is mode 0777, and planted files are made directly. Before issue 15 the spool wrote into
and read from every one of these (the default was the shared ``/tmp/membrane-stimuli-spool``),
and a planted FIFO hung ``spool flush`` forever.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from membrane_otel._internal.state import UnsafePathError, read_secret_file, state_dir
from membrane_otel.membrane._spool import Spool, default_spool_dir
from tests._bus_helpers import CLI, BusProcess, cli_env, envelope

OTHER_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def test_default_spool_is_under_the_users_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_STATE_HOME/membrane-otel/spool, made 0700 (before: /tmp/membrane-stimuli-spool, shared)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_spool_dir() == tmp_path / "state" / "membrane-otel" / "spool"
    spool = Spool(fsync=False)
    spool.write([envelope(0)])
    assert stat.S_IMODE(os.stat(spool.directory).st_mode) == 0o700
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir() == Path.home() / ".local" / "state" / "membrane-otel"


@needs_root
def test_spool_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """Another user pre-created the spool: writes refuse it, naming path and owner (before: written to)."""
    d = _private(tmp_path / "spool")
    os.chown(d, OTHER_UID, OTHER_UID)
    with pytest.raises(
        UnsafePathError, match=rf"refusing spool directory {d}: it is owned by uid {OTHER_UID}"
    ):
        Spool(d).write([envelope(0)])
    assert list(d.iterdir()) == []


def test_world_writable_spool_dir_is_refused(tmp_path: Path) -> None:
    """Mode 0777 (anyone may delete or plant batches): refused (before: used)."""
    d = _private(tmp_path / "spool")
    os.chmod(d, 0o777)
    with pytest.raises(UnsafePathError, match="writable by other users \\(mode 0777\\)"):
        Spool(d).write([envelope(0)])


def test_symlinked_spool_dir_is_refused(tmp_path: Path) -> None:
    """A symlink where the spool should be (pointing anywhere, or nowhere) is refused (before: followed)."""
    target = _private(tmp_path / "elsewhere")
    link = tmp_path / "spool"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError, match="it is a symlink"):
        Spool(link).write([envelope(0)])
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nothing")
    with pytest.raises(UnsafePathError, match="it is a symlink"):
        Spool(dangling).write([envelope(0)])


def test_refused_spool_is_read_as_empty_and_never_replayed(tmp_path: Path) -> None:
    """A reader sees nothing in a refused directory: a batch planted there is never sent."""
    d = _private(tmp_path / "spool")
    Spool(d, fsync=False).write([envelope(0)])
    os.chmod(d, 0o777)
    assert Spool(d).claim_oldest() is None


def test_planted_fifo_does_not_hang_replay(tmp_path: Path) -> None:
    """A FIFO with a batch's name is moved aside unread, and replay goes on (before: read blocked forever)."""
    d = _private(tmp_path / "spool")
    spool = Spool(d, fsync=False)
    os.mkfifo(d / "0000000000000001-0000001-00000001-n1.json")
    spool.write([envelope(7)])
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(spool.claim_oldest()), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "claim_oldest hung on a FIFO"
    batch = got[0]
    assert batch is not None and [e["metadata"]["stimulus_id"] for e in batch.envelopes] == ["s-000007"]  # type: ignore[attr-defined]


def test_planted_symlink_batch_is_not_followed(tmp_path: Path) -> None:
    """A symlink named like a batch (to a file anywhere) is neither counted nor read."""
    d = _private(tmp_path / "spool")
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps([envelope(1)]))
    (d / "0000000000000001-0000001-00000001-n1.json").symlink_to(outside)
    (d / "0000000000000002-0000001-00000002-n1.json").symlink_to(tmp_path / "missing")
    spool = Spool(d, fsync=False)
    assert spool.status()["envelopes"] == 0 and spool.claim_oldest() is None
    spool.write([envelope(2)])  # a dangling symlink in the spool does not make writes fail
    assert spool.status()["envelopes"] == 1


@needs_root
def test_forged_batch_owned_by_another_user_is_not_sent(tmp_path: Path) -> None:
    """A batch file that is not ours (a forged envelope) is moved aside, never returned for sending."""
    d = _private(tmp_path / "spool")
    forged = d / "0000000000000001-0000001-00000001-n1.json"
    forged.write_text(json.dumps([envelope(666)]))
    os.chown(forged, OTHER_UID, OTHER_UID)
    assert Spool(d).claim_oldest() is None
    assert any(p.name.endswith(".corrupt") for p in d.iterdir())


def test_spool_cli_refuses_an_unsafe_dir_in_one_line(tmp_path: Path) -> None:
    """``spool status`` and ``flush`` on a world-writable dir: exit 2, one line naming path and problem."""
    d = _private(tmp_path / "spool")
    os.chmod(d, 0o777)
    for action in ("status", "flush"):
        run = subprocess.run(
            [*CLI, "spool", action, "--dir", str(d)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
        )
        assert run.returncode == 2
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and str(d) in lines[0] and "writable by other users" in lines[0]


def test_explicit_legacy_dir_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MEMBRANE_SPOOL_DIR pointing at a shared-looking dir gets the same checks (a 0777 one is refused)."""
    d = _private(tmp_path / "membrane-stimuli-spool")
    os.chmod(d, 0o1777)
    run = subprocess.run(
        [*CLI, "spool", "status"],
        capture_output=True,
        text=True,
        env=cli_env(MEMBRANE_SPOOL_DIR=str(d)),
        timeout=60,
    )
    assert run.returncode == 2 and "refusing spool directory" in run.stderr


# --------------------------------------------------------------------------- tokens


def test_token_on_the_command_line_is_refused() -> None:
    """``bus serve --token T`` is an error that says why (before: accepted, and visible in ps)."""
    for argv in (["bus", "serve", "--token", "s3cret"], ["bus", "tail", "--token", "s3cret"]):
        run = subprocess.run([*CLI, *argv], capture_output=True, text=True, env=cli_env(), timeout=60)
        assert run.returncode == 2 and "--token-file" in run.stderr and "command line" in run.stderr


def test_bus_takes_its_token_from_a_file(tmp_path: Path) -> None:
    """``bus serve --token-file F``: the token is required, and never appears in the process's argv."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    token_file.chmod(0o600)
    bus = BusProcess()
    bus.args += ["--token-file", str(token_file)]
    bus.start()
    try:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        with pytest.raises(InvalidStatus):
            connect(bus.url, open_timeout=5).close()
        with connect(
            bus.url, additional_headers={"Authorization": "Bearer s3cret-from-file"}, open_timeout=5
        ):
            pass
        assert bus.proc is not None
        cmdline = Path(f"/proc/{bus.proc.pid}/cmdline").read_bytes() if Path("/proc").exists() else b""
        assert b"s3cret" not in cmdline
    finally:
        bus.stop()


def test_secret_file_must_be_a_regular_nonempty_file(tmp_path: Path) -> None:
    """A FIFO, a symlink or an empty file is refused in one line; a regular file gives its first line."""
    good = tmp_path / "t"
    good.write_text("  tok  \nignored\n")
    assert read_secret_file(good) == "tok"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(good)
    (tmp_path / "empty").write_text("")
    for name, problem in (
        ("fifo", "not a regular file"),
        ("link", "symbolic link|Too many levels"),
        ("empty", "empty"),
    ):
        with pytest.raises(UnsafePathError, match=problem):
            read_secret_file(tmp_path / name)
