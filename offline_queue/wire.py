"""The sync protocol's fixed points (spec section 4), shared by the uploader and the reference
receiver so that the two can never disagree: limits, the signature, and which URLs may be used."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from offline_queue.errors import ServerConfigError

MAX_BODY_BYTES = 1024 * 1024  # at most 1 MiB per request body before compression
MAX_EVENTS = 500              # at most 500 events per request
SIGNATURE_TOLERANCE_S = 300   # the receiver refuses timestamps further than this from its clock


def sign(token: str, timestamp: int | str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 keyed with the token over ``"{timestamp}." + body`` as sent."""
    mac = hmac.new(token.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be used (https only; plain http only to a loopback address), or None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        if is_loopback(host):
            return None
        return ("plain http:// is allowed only for a loopback address (127.0.0.0/8, ::1, localhost);"
                " use https://")
    return "is not an https:// URL"


def check_url(url: str) -> str:
    """The URL without a trailing slash; ServerConfigError if ``url_problem`` says no."""
    problem = url_problem(url)
    if problem is not None:
        sep = ":" if problem.startswith("plain") else ""
        raise ServerConfigError([f"server.url: {url!r}{sep} {problem}"])
    return url.rstrip("/")
