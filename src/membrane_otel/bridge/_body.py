"""Reading a request body without trusting its size: raw and decompressed, both capped.

The cap applies to the *decompressed* size: gzip is inflated incrementally with
``zlib.decompressobj`` and a ``max_length`` per step, and inflation stops one byte past the
cap, so a gzip bomb costs at most ``cap`` bytes of memory before it is refused.
"""

from __future__ import annotations

import zlib
from typing import Protocol

__all__ = ["BadBody", "BodyTooLarge", "UnsupportedEncoding", "decode_content", "read_raw"]


class Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


# Inflate at most this much per step, so one step of a bomb is small too.
_STEP = 1 << 20


class BadBody(ValueError):
    """The body is not what its headers say (HTTP 400)."""


class BodyTooLarge(ValueError):
    """The body, raw or decompressed, is over the cap (HTTP 413)."""


class UnsupportedEncoding(ValueError):
    """A Content-Encoding we do not speak (HTTP 415)."""


def read_raw(rfile: Reader, content_length: str | None, chunked: bool, cap: int) -> bytes:
    """The raw request body, by Content-Length or chunked transfer coding, at most ``cap`` bytes."""
    if chunked:
        return _read_chunked(rfile, cap)
    if content_length is None:
        return b""  # no body announced: an empty request (and a 400 from the parser if it needs one)
    try:
        length = int(content_length)
    except ValueError:
        raise BadBody(f"Content-Length {content_length!r} is not a number") from None
    if length < 0:
        raise BadBody("negative Content-Length")
    if length > cap:
        raise BodyTooLarge(f"body of {length} bytes is over the {cap}-byte limit")
    data = rfile.read(length)
    if len(data) != length:
        raise BadBody(f"body ended after {len(data)} of {length} bytes")
    return data


def _read_chunked(rfile: Reader, cap: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise BadBody("malformed chunk header")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadBody("malformed chunk size") from None
        if size == 0:
            # trailers, up to the empty line
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        total += size
        if total > cap:
            raise BodyTooLarge(f"chunked body is over the {cap}-byte limit")
        chunk = rfile.read(size)
        if len(chunk) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BadBody("chunk shorter than announced")
        parts.append(chunk)


def decode_content(raw: bytes, encoding: str | None, cap: int) -> bytes:
    """``raw`` decoded per Content-Encoding (identity, gzip, deflate), at most ``cap`` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return raw
    if enc in ("gzip", "x-gzip"):
        return _inflate(raw, 16 + zlib.MAX_WBITS, cap)
    if enc == "deflate":
        return _inflate(raw, zlib.MAX_WBITS, cap)
    raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported (use gzip or none)")


def _inflate(raw: bytes, wbits: int, cap: int) -> bytes:
    out: list[bytes] = []
    total = 0
    data = raw
    while data:
        d = zlib.decompressobj(wbits)
        try:
            while True:
                piece = d.decompress(data, min(_STEP, cap + 1 - total))
                total += len(piece)
                if total > cap:
                    raise BodyTooLarge(f"decompressed body is over the {cap}-byte limit")
                out.append(piece)
                data = d.unconsumed_tail
                # With no input left, zlib may still hold output: go round once more
                # with empty input until it yields nothing.
                if d.eof or (not piece and not data):
                    break
        except zlib.error as exc:
            raise BadBody(f"cannot decompress the body: {exc}") from None
        if not d.eof:
            raise BadBody("compressed body is truncated")
        # Concatenated gzip members (allowed by RFC 1952) follow in unused_data.
        data = d.unused_data
    return b"".join(out)
