"""The peer client's HTTP reply parser, deadline and memory budget, fed values: no sockets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.http import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfReply,
    Expect,
    MalformedReply,
    OversizedReply,
    ReplyBudget,
    ReplyDeadline,
    ReplyError,
    ReplyEvent,
    ReplyReader,
    ReplyState,
    ReplyTiming,
    Response,
    TruncatedReply,
    UnsolicitedBytes,
    WrongLength,
    grown_capacity,
)
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import INITIAL_REPLY_BUFFER_BYTES, MAX_REPLY_HEAD_BYTES

Outcome = tuple[list[ReplyEvent], str | None]


def events_of(reader: ReplyReader) -> list[ReplyEvent]:
    """Every event available now, up to NEED_DATA (or the first ConnectionClosed)."""
    out: list[ReplyEvent] = []
    for _ in range(10_000):  # a parser that never says NEED_DATA would hang the adapter
        event = reader.next_event()
        if event == NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out
    raise AssertionError("the parser never asked for more data")


def merged(events: list[ReplyEvent]) -> list[ReplyEvent]:
    """Consecutive Data events joined: how bytes were split must not matter."""
    out: list[ReplyEvent] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def run(
    pieces: list[bytes], expects: list[Expect], eof: bool = False, stop_at_error: bool = True
) -> Outcome:
    """Feed `pieces` into a fresh reader; after each EndOfReply, send the next request of
    `expects`. The events and the error class name, if any (only a ReplyError may escape)."""
    reader = ReplyReader()
    pending = list(expects)
    reader.request_sent(pending.pop(0))
    seen: list[ReplyEvent] = []

    def drain() -> None:
        for _ in range(10_000):  # a parser that never says NEED_DATA would hang the adapter
            event = reader.next_event()
            if event == NEED_DATA:
                return
            seen.append(event)
            if isinstance(event, ConnectionClosed):
                return
            if isinstance(event, EndOfReply) and pending:
                reader.request_sent(pending.pop(0))
        raise AssertionError("the parser never asked for more data")

    try:
        for piece in pieces:
            reader.receive_data(piece)
            drain()
        if eof:
            reader.receive_eof()
            drain()
    except ReplyError as exc:
        assert isinstance(exc, RemoteProtocolError)
        assert reader.state is ReplyState.BROKEN
        with pytest.raises(type(exc)):  # and it stays broken
            reader.next_event()
        return merged(seen), type(exc).__name__
    return merged(seen), None


def reply(
    body: bytes, status: int = 200, extra: list[bytes] | None = None, version: bytes = b"HTTP/1.1"
) -> bytes:
    headers = [b"Content-Length: %d" % len(body), *(extra or [])]
    return (
        version + b" %d OK\r\n" % status + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    )


# ---- any bytes: events or a RemoteProtocolError, never a crash or a hang ----------------------

EXPECTS = st.one_of(
    st.builds(Expect, st.integers(0, 64)),
    st.builds(Expect, st.none(), st.integers(0, 1 << 20)),
)
PREFIXES = st.sampled_from(
    [
        b"",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\nContent-Length: ",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
    ]
)


@given(PREFIXES, st.binary(max_size=400), st.lists(st.integers(0, 420)), EXPECTS, st.booleans())
@settings(max_examples=400)
def test_any_bytes_give_events_or_a_remote_protocol_error(
    prefix: bytes, tail: bytes, cuts: list[int], expect: Expect, eof: bool
) -> None:
    data = prefix + tail
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    events, _error = run(pieces, [expect, expect], eof=eof)
    for event in events:
        if isinstance(event, Response):
            assert 200 <= event.status <= 599
            if event.status == 200 and expect.length is not None:
                assert event.content_length == expect.length
    body = sum(len(e.data) for e in events if isinstance(e, Data))
    assert body <= sum(e.content_length for e in events if isinstance(e, Response))


@given(st.binary(max_size=300), EXPECTS)
@settings(max_examples=200)
def test_any_bytes_fed_one_at_a_time_give_the_same_as_whole(tail: bytes, expect: Expect) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + tail
    whole = run([data], [expect], eof=True)
    single = run([data[i : i + 1] for i in range(len(data))], [expect], eof=True)
    assert single == whole


# ---- a valid reply, however it is split ------------------------------------------------------

HEADER_NOISE = st.lists(
    st.sampled_from(
        [
            b"Content-Type: application/json",
            b"Date: Tue, 25 Nov 2026 10:00:00 GMT",
            b"Server: Python/3.11 aiohttp/3.9",
            b'ETag: "abc"',
            b"X-Empty:",
            b"x-weird-but-valid:  spaced value\t",
        ]
    ),
    max_size=4,
)


@st.composite
def valid_replies(draw: st.DrawFn) -> tuple[bytes, Expect, Response, bytes]:
    body = draw(st.binary(max_size=300))
    chunk = draw(st.booleans())
    expect = Expect(len(body)) if chunk else Expect(None, len(body) + draw(st.integers(0, 100)))
    status = draw(st.sampled_from([200, 200, 200, 404, 500]))
    close = draw(st.booleans())
    extra = draw(HEADER_NOISE) + ([b"Connection: close"] if close else [])
    name = draw(st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"]))
    data = reply(body, status, extra).replace(b"Content-Length", name, 1)
    return data, expect, Response(status, len(body), not close), body


@given(valid_replies())
@settings(max_examples=100)
def test_a_valid_reply_split_at_every_byte_gives_the_same_events(
    case: tuple[bytes, Expect, Response, bytes],
) -> None:
    data, expect, response, body = case
    want = [response, *([Data(body)] if body else []), EndOfReply()]
    assert run([data], [expect]) == (want, None)
    for cut in range(len(data) + 1):
        assert run([data[:cut], data[cut:]], [expect]) == (want, None), cut


@given(valid_replies(), st.lists(st.integers(0, 400), max_size=20))
@settings(max_examples=150)
def test_a_valid_reply_in_random_pieces_gives_the_same_events(
    case: tuple[bytes, Expect, Response, bytes], cuts: list[int]
) -> None:
    data, expect, response, body = case
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    want = [response, *([Data(body)] if body else []), EndOfReply()]
    assert run(pieces, [expect]) == (want, None)


@given(st.lists(valid_replies(), min_size=1, max_size=5), st.integers(1, 50))
@settings(max_examples=100)
def test_kept_alive_replies_one_after_another(
    cases: list[tuple[bytes, Expect, Response, bytes]], step: int
) -> None:
    """Replies in a row on one connection, each after its request, in pieces of `step` bytes."""
    reader = ReplyReader()
    for data, expect, response, body in cases:
        reader.request_sent(expect)
        seen: list[ReplyEvent] = []
        for at in range(0, len(data), step):
            reader.receive_data(data[at : at + step])
            seen += events_of(reader)
        assert merged(seen) == [response, *([Data(body)] if body else []), EndOfReply()]
        assert reader.state is ReplyState.DONE
    reader.receive_eof()
    assert events_of(reader) == [ConnectionClosed()]


@given(st.integers(1, 5000), st.lists(st.integers(1, 3000), max_size=30))
@settings(max_examples=100)
def test_zero_copy_body_accounting(length: int, reads: list[int]) -> None:
    """The adapter reads a body straight into its own buffer, never more than asked for."""
    reader = ReplyReader()
    reader.request_sent(Expect(length))
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length)
    assert events_of(reader) == [Response(200, length, True)]
    got = 0
    for size in [*reads, length]:
        want = min(size, reader.body_remaining)
        if not want:
            break
        reader.body_received(want)
        got += want
        events = events_of(reader)
        assert events == ([EndOfReply()] if got == length else [])
    assert got == length and reader.body_remaining == 0
    with pytest.raises(RuntimeError):
        reader.body_received(1)  # past the body: the adapter's bug, not the peer's


def test_head_and_start_of_body_together_then_the_rest_straight_into_the_buffer() -> None:
    reader = ReplyReader()
    reader.request_sent(Expect(10))
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123")
    assert events_of(reader) == [Response(200, 10, True), Data(b"0123")]
    assert reader.body_remaining == 6
    reader.body_received(6)
    assert events_of(reader) == [EndOfReply()]
    assert reader.state is ReplyState.DONE


# ---- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expect", "error"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Expect(None, 100),
            MalformedReply,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Expect(None, 100),
            MalformedReply,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
            Expect(None, 100),
            MalformedReply,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            Expect(None, 100),
            MalformedReply,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            Expect(None, 100),
            MalformedReply,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
            Expect(None, 100),
            MalformedReply,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", Expect(None, 100), MalformedReply),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", Expect(None, 100), MalformedReply),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", Expect(None, 100), MalformedReply),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa5\r\n\r\n", Expect(None, 100), MalformedReply),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            Expect(None, 100),
            MalformedReply,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", Expect(None, 100), OversizedReply),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            Expect(None, 100),
            OversizedReply,
        ),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 10000000\r\n\r\n", Expect(16), OversizedReply),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n", Expect(16), WrongLength),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n", Expect(16), WrongLength),
        (b"HTTP/1.1 100 Continue\r\n\r\n", Expect(16), MalformedReply),
        (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", Expect(0), MalformedReply),
        (b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n", Expect(0), MalformedReply),
        (b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", Expect(0), MalformedReply),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\nX: y\r\n\r\n", Expect(0), MalformedReply),
        (
            b"HTTP/1.1 200 OK\r\n folded: header\r\nContent-Length: 0\r\n\r\n",
            Expect(0),
            MalformedReply,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", Expect(0), MalformedReply),
        (
            b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
            Expect(0),
            MalformedReply,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_REPLY_HEAD_BYTES + b"\r\n\r\n",
            Expect(0),
            OversizedReply,
        ),
        (reply(b"x" * 16) + b"extra", Expect(16), UnsolicitedBytes),
        (reply(b"x" * 16) + reply(b"y" * 16), Expect(16), UnsolicitedBytes),
    ],
)
def test_refused_replies(data: bytes, expect: Expect, error: type[ReplyError]) -> None:
    whole = run([data], [expect])
    assert whole[1] == error.__name__
    assert run([data[i : i + 1] for i in range(len(data))], [expect]) == whole


def test_a_head_one_byte_at_a_time_is_cut_at_its_limit_not_held() -> None:
    reader = ReplyReader()
    reader.request_sent(Expect(0))
    reader.receive_data(b"HTTP/1.1 200 OK\r\nX: ")
    with pytest.raises(OversizedReply):
        for _ in range(MAX_REPLY_HEAD_BYTES):
            reader.receive_data(b"a")
            assert reader.next_event() == NEED_DATA


def test_a_304_has_no_body_whatever_its_length_says() -> None:
    data = b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\nETag: "v"\r\n\r\n'
    assert run([data], [Expect(None, 10)]) == ([Response(304, 0, True), EndOfReply()], None)


def test_keep_alive_follows_version_and_connection_header() -> None:
    def head(version: bytes, extra: list[bytes]) -> Response:
        events, error = run([reply(b"", 200, extra, version)], [Expect(0)])
        assert error is None and isinstance(events[0], Response)
        return events[0]

    assert head(b"HTTP/1.1", []).keep_alive
    assert not head(b"HTTP/1.1", [b"Connection: close"]).keep_alive
    assert not head(b"HTTP/1.1", [b"Connection: Keep-Alive, Close"]).keep_alive
    assert not head(b"HTTP/1.0", []).keep_alive
    assert head(b"HTTP/1.0", [b"Connection: keep-alive"]).keep_alive


def test_truncated_replies_and_a_quiet_close_between_replies() -> None:
    data = reply(b"0123456789")
    for cut in range(len(data)):
        _events, error = run([data[:cut]], [Expect(10)], eof=True)
        assert error == "TruncatedReply", cut
    assert run([data], [Expect(10)], eof=True)[1] is None
    reader = ReplyReader()
    reader.receive_eof()
    assert events_of(reader) == [ConnectionClosed()]


def test_bytes_before_any_request_or_between_replies_are_refused() -> None:
    reader = ReplyReader()
    reader.receive_data(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(UnsolicitedBytes):
        reader.next_event()
    reader = ReplyReader()
    reader.request_sent(Expect(2))
    reader.receive_data(reply(b"ok"))
    assert merged(events_of(reader)) == [Response(200, 2, True), Data(b"ok"), EndOfReply()]
    reader.receive_data(b"late")  # the peer goes on after the reply, before the next request
    reader.request_sent(Expect(2))
    with pytest.raises(UnsolicitedBytes):
        reader.next_event()


def test_truncated_error_says_how_far_the_reply_got() -> None:
    reader = ReplyReader()
    reader.request_sent(Expect(10))
    reader.receive_data(reply(b"0123456789")[:-4])
    events_of(reader)
    reader.receive_eof()
    with pytest.raises(TruncatedReply, match="6 of 10"):
        reader.next_event()


# ---- deadlines, with time passed in ---------------------------------------------------------

TIMING = ReplyTiming(idle_seconds=10.0, base_seconds=10.0, min_bytes_per_second=1000.0)


def test_a_trickle_is_cut_after_the_base_whatever_length_it_announced() -> None:
    deadline = ReplyDeadline(TIMING, now=100.0)
    now = 100.0
    while (why := deadline.expired(now)) is None:
        assert now < 100.0 + TIMING.base_seconds + 1.0
        now += 5.0  # a byte every 5 s: never idle long enough for the idle timeout
        deadline.received_bytes(1, now)
    assert why.startswith("too slow")


def test_a_reply_at_the_minimum_rate_is_never_cut() -> None:
    deadline = ReplyDeadline(TIMING, now=0.0)
    for second in range(1, 1000):
        deadline.received_bytes(1000, float(second))
        assert deadline.expired(float(second)) is None
        assert deadline.next_deadline() > second


def test_silence_is_cut_by_the_idle_timeout_and_the_wake_up_time_is_exact() -> None:
    deadline = ReplyDeadline(TIMING, now=0.0)
    deadline.received_bytes(1_000_000, 1.0)  # far ahead of the rate, then silence
    assert deadline.next_deadline() == 11.0
    assert deadline.expired(10.99) is None
    assert (deadline.expired(11.0) or "").startswith("sent nothing for 10 s")


# ---- memory ---------------------------------------------------------------------------------


@given(st.integers(0, 1 << 30), st.lists(st.integers(1, 1 << 20), max_size=50))
def test_a_growing_buffer_holds_at_most_twice_what_arrived(length: int, pieces: list[int]) -> None:
    capacity = received = 0
    for piece in pieces:
        if received + piece > length:
            break
        received += piece
        if received > capacity:
            capacity = grown_capacity(capacity, received, length)
        assert received <= capacity <= max(INITIAL_REPLY_BUFFER_BYTES, 2 * received)
        assert capacity <= length


def test_the_budget_refuses_what_would_go_over_it() -> None:
    budget = ReplyBudget(100)
    assert budget.reserve(60) and budget.reserve(40)
    assert not budget.reserve(1)
    budget.release(50)
    assert budget.reserve(50) and budget.held_bytes == 100
    assert budget.refused == 1 and budget.peak_bytes == 100
