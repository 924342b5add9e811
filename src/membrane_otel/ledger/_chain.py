"""The chain's arithmetic: how a line is encoded and hashed, and where a file's chain goes on.

Standard library only, little of it at import time: the shell emitter appends through this.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Protocol

    class _Digest(Protocol):
        def hexdigest(self) -> str: ...

    Sha256 = Callable[[bytes], _Digest]

GENESIS = "0" * 64
_HASH_MARK = ',"hash":"'
_HASH_SUFFIX_LEN = len(_HASH_MARK) + 64 + len('"}')
_CHAIN_KEYS = ("seq", "prev_hash", "hash")

# One encoder for every line: json.dumps with non-default options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _dumps(obj: Mapping[str, Any]) -> bytes:
    """A line's JSON as UTF-8 bytes (what is hashed and written: no str round trip)."""
    if _orjson_dumps is not None:
        try:
            encoded: bytes = _orjson_dumps(obj, default=str)
            return encoded
        except TypeError:  # an int beyond 64 bits, a non-str key: the stdlib handles those
            pass
    return _encode(obj).encode()


def _load_orjson() -> Any:
    # orjson encodes a line ~15x faster than the stdlib; it is what lets the ledger exporter
    # and the bridge keep up (benchmarks rows 4 and 5). Same compact JSON either way, and the
    # chain hashes the bytes as written, so lines from either encoder verify alike. The shell
    # emitter (one line per process) skips the import.
    import sys

    if "membrane_otel.cli.emit" in sys.modules and "opentelemetry" not in sys.modules:
        return None
    try:
        from orjson import dumps

        return dumps
    except ImportError:
        return None


_orjson_dumps: Any = _load_orjson()


def line_hash(body_without_hash: str) -> str:
    import hashlib

    return hashlib.sha256(body_without_hash.encode("utf-8")).hexdigest()


def builtin_sha256() -> Sha256:
    """The interpreter's own SHA-256, for a process that appends one line and exits.

    ``hashlib`` loads OpenSSL (about 2 ms of the shell emitter's start-up); the built-in
    module is slower per byte, which one line does not feel. The digests are the same.
    """
    for name in ("_sha2", "_sha256"):  # CPython 3.12+, 3.11
        try:
            module = __import__(name)
        except ImportError:
            continue
        return module.sha256  # type: ignore[no-any-return]
    import hashlib

    return hashlib.sha256


def split_hash(raw: str) -> tuple[str, str] | None:
    """``(body_without_hash, hash)`` of a chained line, or None if it has no hash suffix."""
    raw = raw.rstrip("\n")
    if len(raw) < _HASH_SUFFIX_LEN or not raw.endswith('"}'):
        return None
    cut = len(raw) - _HASH_SUFFIX_LEN
    if raw[cut : cut + 9] != _HASH_MARK:
        return None
    return raw[:cut], raw[cut + 9 : -2]


# --------------------------------------------------------------------------- tails (where the chain goes on)


def _last_chained(data: bytes) -> tuple[int, str] | None:
    """``(seq, hash)`` of the last whole chained line in ``data`` (torn segments skipped)."""
    for raw in reversed(data.split(b"\n")):
        raw = raw.strip()
        if not raw.endswith(b'"}'):
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("hash"), str) and isinstance(obj.get("seq"), int):
            return obj["seq"], obj["hash"]
    return None


def _read_tail(fd: int, size: int, *, min_lines: int = 2) -> bytes:
    """The last bytes of an open file, enough to hold ``min_lines`` whole lines."""
    chunk, data, pos = 4096, b"", size
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        if data.count(b"\n") > min_lines:
            break
        chunk *= 2
    return data


def file_tail(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """``(seq, hash)`` of the last whole chained line of one file, if it has any."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        data = _read_tail(fd, size)
        found = _last_chained(data)
        if found is None and len(data) < size:
            found = _last_chained(os.pread(fd, size, 0))  # only torn/garbage at the end
        return found
    finally:
        os.close(fd)
