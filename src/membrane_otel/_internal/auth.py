"""The one bearer-token check, for the bridge and the reference bus alike."""

from __future__ import annotations

import hmac

__all__ = ["bearer_ok"]


def bearer_ok(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` (the scheme case-insensitive, as RFC 9110 says of auth
    schemes), compared in constant time: the token must not leak through response timing.
    No token configured: everyone passes."""
    if not token:
        return True
    scheme, _, credential = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        credential = ""
    return hmac.compare_digest(credential.strip().encode(), token.encode())
