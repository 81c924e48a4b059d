"""The peer client's HTTP/1.1 replies, without a socket: a reply parser (bytes in, events out),
the deadline a reply must keep, and the budget of memory replies may hold.

Nothing here reads a clock or touches asyncio: the adapter (net/chunkconn.py) feeds the parser
what the socket gave it, passes `now` to the deadline, and arms the timer it asks for.

How the parser works. A kept-alive connection carries one request at a time:

    IDLE --request_sent--> HEAD --Response--> BODY --EndOfReply--> DONE --request_sent--> HEAD ...

- HEAD: a status line and headers, together at most `max_head_bytes`, ended by a blank line.
  The reply must say its length in exactly one Content-Length (no Transfer-Encoding, so no
  chunked body); a 204 or 304 has no body. The length is checked against what the request
  allows (`Expect`) before `Response` is returned, so the adapter can take a buffer of exactly
  that size.
- BODY: body bytes either come through `receive_data()`, and come back as `Data` events, or the
  adapter reads them straight into its own buffer (zero copy) and reports them with
  `body_received(n)`; `body_remaining` says how many it may read, never more. After the last
  byte, `EndOfReply`.
- IDLE, DONE: no request is outstanding, so any byte the peer sends is an error (a reply longer
  than its Content-Length, or bytes nobody asked for). End of file here is a quiet
  `ConnectionClosed`; in HEAD or BODY it is a truncated reply.

Whatever the peer sends, `next_event()` returns events or raises a `ReplyError` (a
RemoteProtocolError); after an error the parser stays broken and the connection must go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import (
    INITIAL_REPLY_BUFFER_BYTES,
    MAX_ERROR_REPLY_BYTES,
    MAX_REPLY_HEAD_BYTES,
)

# ---- what a request allows -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """The reply a request allows: a 200 body of exactly `length` bytes (a chunk, whose length
    the manifest gives), or, with `length` None, of at most `limit` bytes (a catalogue, a
    manifest). Replies other than 200 may carry a short error body."""

    length: int | None = None
    limit: int = 0


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """A reply's head: its status, how many body bytes follow, and whether the connection may
    carry another request afterwards."""

    status: int
    content_length: int
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Data:
    """Body bytes that came through `receive_data()`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfReply:
    """The body is complete."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection between replies."""


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing more until more bytes (or the end of file) arrive."""


NEED_DATA = NeedData()

ReplyEvent = Response | Data | EndOfReply | ConnectionClosed | NeedData


# ---- errors ----------------------------------------------------------------------------------


class ReplyError(RemoteProtocolError):
    """A reply that breaks the protocol; `reason` is one word for what the peer did."""

    reason = "malformed"


class MalformedReply(ReplyError):
    """Not a well-formed HTTP/1.1 reply of the kind the peer server sends."""

    reason = "malformed"


class OversizedReply(ReplyError):
    """A head, or a body length, over its limit."""

    reason = "oversized"


class WrongLength(ReplyError):
    """A chunk whose Content-Length is not the length the manifest gives."""

    reason = "wrong_length"


class TruncatedReply(ReplyError):
    """The connection ended before the reply did."""

    reason = "truncated"


class UnsolicitedBytes(ReplyError):
    """Bytes after the end of a reply, or before any request."""

    reason = "unsolicited"


# ---- the parser ------------------------------------------------------------------------------


class ReplyState(Enum):
    """Where the parser is in the request/reply cycle (see the module docstring)."""

    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    DONE = "done"
    CLOSED = "closed"
    BROKEN = "broken"


class ReplyReader:
    """Parses the replies of one kept-alive connection, one request at a time."""

    def __init__(
        self,
        max_head_bytes: int = MAX_REPLY_HEAD_BYTES,
        max_error_bytes: int = MAX_ERROR_REPLY_BYTES,
    ) -> None:
        self.state = ReplyState.IDLE
        self._max_head = max_head_bytes
        self._max_error = max_error_bytes
        self._buffer = bytearray()
        self._scanned = 0
        self._expect = Expect()
        self._length = 0
        self._remaining = 0
        self._eof = False
        self._error: ReplyError | None = None

    def request_sent(self, expect: Expect) -> None:
        """A request went out; its reply must fit `expect`."""
        if self.state not in (ReplyState.IDLE, ReplyState.DONE):
            raise RuntimeError(f"no request can be sent on a connection in state {self.state}")
        self.state = ReplyState.HEAD
        self._expect = expect
        self._scanned = 0
        self._length = self._remaining = 0
        if self._buffer:  # a byte that arrived before the request cannot be its reply
            self._broken(UnsolicitedBytes(f"{len(self._buffer)} bytes arrived before the request"))

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the connection (any state; errors show in `next_event()`)."""
        if self._eof:
            raise RuntimeError("bytes after the end of file")
        self._buffer += data

    def receive_eof(self) -> None:
        """The peer closed its side of the connection."""
        self._eof = True

    def body_received(self, nbytes: int) -> None:
        """`nbytes` body bytes went straight into the adapter's buffer (at most
        `body_remaining`, and only once every `Data` event has been taken)."""
        if self.state is not ReplyState.BODY or self._buffer or not 0 <= nbytes <= self._remaining:
            raise RuntimeError("body bytes that were not asked for")
        self._remaining -= nbytes

    @property
    def body_remaining(self) -> int:
        """Body bytes still expected (0 outside a body)."""
        return self._remaining if self.state is ReplyState.BODY else 0

    @property
    def body_length(self) -> int:
        """The Content-Length of the reply being received."""
        return self._length

    def next_event(self) -> ReplyEvent:
        """The next event, NEED_DATA, or a ReplyError."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ReplyError as exc:
            self._broken(exc)
            raise

    # ---- private -------------------------------------------------------------------------

    def _broken(self, exc: ReplyError) -> None:
        self.state = ReplyState.BROKEN
        self._error = exc
        self._buffer.clear()

    def _next(self) -> ReplyEvent:
        state = self.state
        if state is ReplyState.BODY:
            if not self._remaining:
                self.state = ReplyState.DONE
                return EndOfReply()
            if self._buffer:
                n = min(len(self._buffer), self._remaining)
                data = bytes(self._buffer[:n])
                del self._buffer[:n]
                self._remaining -= n
                return Data(data)
            if self._eof:
                raise TruncatedReply(
                    f"connection closed after {self._length - self._remaining} of"
                    f" {self._length} body bytes"
                )
            return NEED_DATA
        if state is ReplyState.HEAD:
            return self._head()
        if state in (ReplyState.IDLE, ReplyState.DONE):
            if self._buffer:
                raise UnsolicitedBytes(
                    f"{len(self._buffer)} bytes after the end of the reply"
                    if state is ReplyState.DONE
                    else f"{len(self._buffer)} bytes nobody asked for"
                )
            if self._eof:
                self.state = ReplyState.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        return ConnectionClosed()  # CLOSED

    def _head(self) -> ReplyEvent:
        end = self._buffer.find(b"\r\n\r\n", max(0, self._scanned - 3), self._max_head)
        if end < 0:
            self._scanned = min(len(self._buffer), self._max_head)
            if len(self._buffer) >= self._max_head:
                raise OversizedReply(f"reply head longer than {self._max_head} bytes")
            if self._eof:
                raise TruncatedReply(
                    "connection closed before a reply"
                    if not self._buffer
                    else f"connection closed after {len(self._buffer)} bytes of the reply head"
                )
            return NEED_DATA
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        response = _parse_head(head, self._expect, self._max_error)
        self.state = ReplyState.BODY
        self._length = self._remaining = response.content_length
        return response


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_LENGTH_DIGITS = 18  # far over any limit; int() of a longer string is never needed


def _parse_head(head: bytes, expect: Expect, max_error: int) -> Response:
    lines = head.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise MalformedReply("a bare CR or LF in the reply head")
    version, sep, rest = lines[0].partition(b" ")
    code = rest.partition(b" ")[0]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not sep:
        raise MalformedReply("not an HTTP/1.1 reply")
    if len(code) != 3 or not code.isdigit() or not b"200" <= code <= b"599":
        raise MalformedReply("not a final HTTP status code")
    status = int(code)
    length: int | None = None
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise MalformedReply("malformed header line")
        key = name.lower()
        value = value.strip(b" \t")
        if key == b"content-length":
            if length is not None:
                raise MalformedReply("more than one Content-Length")
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                raise MalformedReply("Content-Length is not a number")
            length = int(value)
        elif key == b"transfer-encoding":
            raise MalformedReply("a Transfer-Encoding (chunked) reply, not a Content-Length")
        elif key == b"connection":
            tokens = {token.strip(b" \t") for token in value.lower().split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    if status in (204, 304):
        return Response(status, 0, keep_alive)  # no body, whatever the length says
    if length is None:
        raise MalformedReply("reply without Content-Length")
    if status == 200 and expect.length is not None:
        if length != expect.length:
            raise WrongLength(f"a reply of {length} bytes, not the {expect.length} asked for")
    elif status == 200:
        if length > expect.limit:
            raise OversizedReply(f"a reply of {length} bytes, over the limit of {expect.limit}")
    elif length > max_error:
        raise OversizedReply(f"an error reply of {length} bytes, over the limit of {max_error}")
    return Response(status, length, keep_alive)


# ---- deadlines -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyTiming:
    """How long a reply may take: no byte for `idle_seconds` ends it, and so does falling
    behind `min_bytes_per_second` on average, counted after the first `base_seconds`."""

    idle_seconds: float
    base_seconds: float
    min_bytes_per_second: float


class ReplyDeadline:
    """The deadline of one reply in progress; time is passed in.

    By `started + base + n / rate` the peer must have sent at least n bytes: a reply of L bytes
    gets `base + L / rate` in all, and a peer that trickles (or announces a huge length and then
    sends a byte now and then) is cut after about `base`, whatever length it announced.
    """

    def __init__(self, timing: ReplyTiming, now: float) -> None:
        self.timing = timing
        self.started = now
        self.last = now
        self.received = 0

    def received_bytes(self, nbytes: int, now: float) -> None:
        """`nbytes` more bytes arrived at `now`."""
        self.received += nbytes
        self.last = now

    def next_deadline(self) -> float:
        """When to look again (`expired()` says nothing before this)."""
        timing = self.timing
        return min(
            self.last + timing.idle_seconds,
            self.started + timing.base_seconds + self.received / timing.min_bytes_per_second,
        )

    def expired(self, now: float) -> str | None:
        """Why the reply is over its deadline at `now`, or None while it is not."""
        timing = self.timing
        if now >= self.last + timing.idle_seconds:
            return f"sent nothing for {timing.idle_seconds:g} s"
        if now >= self.started + timing.base_seconds + self.received / timing.min_bytes_per_second:
            return (
                f"too slow: {self.received} bytes in {now - self.started:.1f} s"
                f" (at least {timing.min_bytes_per_second:g} bytes/s expected)"
            )
        return None


# ---- memory ----------------------------------------------------------------------------------


class ReplyBudget:
    """The bytes held at once for replies whose size the peer chooses (catalogues, manifests,
    error bodies), across all peers: a reply that would take more is refused."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = 0
        self.peak_bytes = 0
        self.refused = 0

    def reserve(self, nbytes: int) -> bool:
        """Take `nbytes` more, or False (and counted) when that would go over the limit."""
        if self.held_bytes + nbytes > self.limit_bytes:
            self.refused += 1
            return False
        self.held_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        return True

    def release(self, nbytes: int) -> None:
        """Give back `nbytes` taken before."""
        self.held_bytes -= nbytes


def grown_capacity(capacity: int, needed: int, length: int) -> int:
    """The next size of a reply buffer that must hold `needed` of `length` bytes: doubled (so
    what it holds stays within twice what arrived), never past the length."""
    return min(length, max(needed, INITIAL_REPLY_BUFFER_BYTES, 2 * capacity))
