"""The bulk data plane's wire format, shared by the server (``bulk.py``) and its clients
(``bulk_client.py``), so a subscriber never imports the server side.

A connection makes one request (all integers big-endian), a *fetch* or a *push subscription*::

    request   "IWB1" (fetch) or "IWP1" (push) | u64 version | u16 token length | token (UTF-8, ≤ 4 KiB)
    fetch     "IWB1" | u8 status | u64 version | u64 length | length bytes (status OK only); then closed
    push      "IWP1" | u8 status | u64 version | u64 length | 32-byte sha256 | u16 fingerprint length |
              fingerprint | length bytes   — one such frame per version, for as long as the connection lasts

A fetch asks for one version (0 = the current one) and the connection closes after the response.
A push subscription names the version the subscriber holds; the service sends the current version
at once if it is newer, then every newer one as it is committed (latest wins: while a frame is being
sent, versions committed meanwhile are skipped for the newest). Between frames the connection is
idle; the service closes it when it stops. A refused push request gets one frame with a non-OK status
and length 0, then the connection closes.

Status codes: OK; UNAUTHENTICATED (missing or unknown token); GONE (fetch only: that version is no
longer held, or none is yet: wait for the next announcement); MALFORMED (bad magic or token length);
BUSY (more than ``max_connections`` connections: take the chunks instead). A request that does not
arrive within the request timeout is dropped without a response; a response or frame not taken
within the send timeout is cut off.
"""

from __future__ import annotations

import enum
import socket
import struct

MAGIC = b"IWB1"
PUSH_MAGIC = b"IWP1"
REQUEST = struct.Struct("!4sQH")
RESPONSE = struct.Struct("!4sBQQ")
FRAME = struct.Struct("!4sBQQ32sH")  # then the fingerprint, then the payload
MAX_TOKEN_BYTES = 4096


class Status(enum.IntEnum):
    OK = 0
    UNAUTHENTICATED = 1
    GONE = 2
    MALFORMED = 3
    BUSY = 4


def request(version: int, token: str, *, push: bool = False) -> bytes:
    """A fetch request for ``version`` (0 = current), or with ``push`` a subscription to every version
    newer than ``version``."""
    raw = token.encode()
    return REQUEST.pack(PUSH_MAGIC if push else MAGIC, version, len(raw)) + raw


def frame_header(version: int, sha256_hex: str, fingerprint: str, length: int, status: Status = Status.OK) -> bytes:
    """The bytes before a pushed version's payload (or a refusal, with ``length`` 0)."""
    fp = fingerprint.encode()
    sha = bytes.fromhex(sha256_hex) if sha256_hex else bytes(32)
    return FRAME.pack(PUSH_MAGIC, status, version, length, sha, len(fp)) + fp


def keep_alive(conn: socket.socket) -> None:
    """TCP keepalive on an idle push connection (both ends): a peer gone without a FIN or RST (a dead
    node, a dropped NAT entry) is noticed within ~40 s instead of the kernel's default two hours."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 20), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):  # Linux names; other systems keep their defaults
            conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
