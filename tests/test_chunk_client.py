"""The peer client's HTTP connections against scripted servers on loopback: a malformed reply
fails that request only and prints nothing; a slow reply is cut at its deadline; memory held
for replies follows the bytes that arrived, within one budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from swarmshare.core.http import ReplyBudget, ReplyError, WrongLength
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import KIB, MAX_CATALOG_BYTES, MIB
from swarmshare.net.chunkconn import Buffer, BufferPool, ChunkClient, ChunkFetchError, PeerSlots

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHUNK = b"0123456789abcdef"
GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + CHUNK


@contextlib.asynccontextmanager
async def scripted_server(answer: Answer) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that answers every connection with `answer`; its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


class CountingPool(BufferPool):
    """A buffer pool that counts the buffers taken from it."""

    def __init__(self) -> None:
        super().__init__(1 * MIB)
        self.taken = 0

    def get(self, size: int) -> Buffer:
        self.taken += 1
        return super().get(size)


def client(**kwargs: object) -> ChunkClient:
    options: dict[str, object] = {"local_address": None, "idle_timeout": 30.0}
    options.update(kwargs)
    return ChunkClient(pool=CountingPool(), **options)  # type: ignore[arg-type]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ---- a malformed reply costs that request only, and prints nothing ---------------------------

BAD_CHUNK_REPLIES = {
    "length too long": b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n" + CHUNK + b"!",
    "length too short": b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + CHUNK[:15],
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + CHUNK,
    "no length": b"HTTP/1.1 200 OK\r\n\r\n" + CHUNK,
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nContent-Length: 16\r\n\r\n",
    "huge length": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "huge head": b"HTTP/1.1 200 OK\r\nX: " + b"a" * (64 * KIB),
    "truncated body": b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + CHUNK[:7],
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n",
}


def test_a_malformed_chunk_reply_fails_that_request_only_and_prints_nothing(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A wrong Content-Length on a chunk once printed "Fatal error: protocol.buffer_updated()
    call failed" and a traceback; now each bad reply is a RemoteProtocolError for its request,
    and the next request (a new connection) gets its chunk."""
    caplog.set_level(logging.DEBUG)
    outcomes: dict[str, str] = {}

    async def scenario() -> None:
        served = 0

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            while True:
                await reader.readuntil(b"\r\n\r\n")
                bad = list(BAD_CHUNK_REPLIES.values())
                writer.write(bad[served // 2] if served % 2 == 0 else GOOD)
                served += 1
                await writer.drain()
                if served % 2 == 1:
                    return  # a bad reply; the client drops the connection anyway

        async with scripted_server(answer) as port:
            chunks = client()
            try:
                for name in BAD_CHUNK_REPLIES:
                    try:
                        await chunks.fetch("127.0.0.1", port, "/v1/content/x/chunk/0", 16)
                        outcomes[name] = "taken"
                    except RemoteProtocolError as exc:
                        outcomes[name] = type(exc).__name__
                    assert bytes(await chunks.fetch("127.0.0.1", port, "/c", 16)) == CHUNK
                # A pooled buffer is taken only for a head with the manifest's length: only the
                # good replies (and the truncated one, whose head was right) took one.
                assert isinstance(chunks.pool, CountingPool)
                assert chunks.pool.taken == len(BAD_CHUNK_REPLIES) + 1
            finally:
                chunks.close()

    asyncio.run(scenario())
    assert all(outcome != "taken" for outcome in outcomes.values()), outcomes
    assert outcomes["length too long"] == outcomes["length too short"] == WrongLength.__name__
    assert outcomes["truncated body"] == "TruncatedReply"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    err = capfd.readouterr().err
    for text in (logged, err):
        assert "Fatal error" not in text and "Traceback" not in text, text


def test_the_error_names_the_peer_and_what_it_did() -> None:
    async def scenario() -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
            await writer.drain()

        async with scripted_server(answer) as port:
            chunks = client()
            try:
                with pytest.raises(ReplyError) as caught:
                    await chunks.fetch("127.0.0.1", port, "/v1/content/x/chunk/0", 16)
            finally:
                chunks.close()
            return f"{port}|{caught.value}|{caught.value.reason}"

    port, message, reason = asyncio.run(scenario()).split("|")
    assert message.startswith(f"127.0.0.1:{port}: ") and "99 bytes, not the 16" in message
    assert reason == "wrong_length"


# ---- deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_reply_trickling_in_is_cut_at_its_deadline(where: str) -> None:
    """A peer sending a catalogue a byte at a time, never silent long enough for the idle
    timeout, is cut as too slow. The server sends at most 20 bytes/s and the client asks for
    200: the outcome does not depend on how fast this machine is."""
    sent = 0

    async def scenario() -> ChunkFetchError:
        nonlocal sent

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_CATALOG_BYTES
            if where == "body":
                writer.write(head)
                head = b""
            for byte in head + b"x" * MAX_CATALOG_BYTES:
                writer.write(bytes([byte]))
                sent += 1
                await writer.drain()
                await asyncio.sleep(0.05)

        async with scripted_server(answer) as port:
            slow = client(idle_timeout=60.0, deadline_base_seconds=0.2, min_bytes_per_second=200)
            try:
                with pytest.raises(ChunkFetchError) as caught:
                    await asyncio.wait_for(
                        slow.get("127.0.0.1", port, "/v1/catalog", limit=MAX_CATALOG_BYTES), 60
                    )
            finally:
                slow.close()
            return caught.value

    error = asyncio.run(scenario())
    assert "too slow" in str(error) and error.reason == "timeout"
    assert sent > 0


def test_a_silent_peer_is_cut_by_the_idle_timeout() -> None:
    async def scenario() -> ChunkFetchError:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n0123")
            await writer.drain()
            await asyncio.Event().wait()  # then nothing, connection open

        async with scripted_server(answer) as port:
            quiet = client(idle_timeout=0.2, deadline_base_seconds=60.0)
            try:
                with pytest.raises(ChunkFetchError) as caught:
                    await asyncio.wait_for(quiet.fetch("127.0.0.1", port, "/c", 16), 60)
            finally:
                quiet.close()
            return caught.value

    error = asyncio.run(scenario())
    assert "sent nothing for 0.2 s" in str(error) and error.reason == "timeout"


# ---- memory ---------------------------------------------------------------------------------


def test_huge_announced_lengths_trickling_in_hold_memory_by_bytes_received() -> None:
    """16 connections each announce a 32 MiB catalogue, then send a byte every 50 ms: the client
    holds memory for what arrived (once 512 MiB, allocated and zeroed up front)."""
    connections = 16
    trickled: dict[int, int] = {}

    async def scenario() -> tuple[int, int]:
        all_trickling = asyncio.Event()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            key = id(writer)
            trickled[key] = 0
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_CATALOG_BYTES)
            while True:
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(b"{")
                trickled[key] += 1
                if len(trickled) == connections and min(trickled.values()) >= 3:
                    all_trickling.set()

        async with scripted_server(answer) as port:
            hostile = client()
            before = rss_bytes()
            fetches = [
                asyncio.ensure_future(
                    hostile.get("127.0.0.1", port, "/v1/catalog", limit=MAX_CATALOG_BYTES)
                )
                for _ in range(connections)
            ]
            try:
                # The client has read every head before the server sends a third byte after
                # it: they share this one event loop.
                await asyncio.wait_for(all_trickling.wait(), 60)
                grown = rss_bytes() - before
                assert grown < 64 * MIB, f"client memory grew by {grown / MIB:.0f} MiB"
                held = hostile.budget.held_bytes
            finally:
                for fetch in fetches:
                    fetch.cancel()
                await asyncio.gather(*fetches, return_exceptions=True)
                hostile.close()
            assert hostile.budget.held_bytes == 0  # given back when the requests end
            return grown, held

    grown, held = asyncio.run(scenario())
    assert held <= connections * 2 * max(trickled.values())  # twice what arrived, at most
    assert grown < 64 * MIB


def test_replies_over_the_budget_are_refused_and_the_rest_arrive_whole() -> None:
    payload = os.urandom(3 * MIB + 12345)

    async def scenario() -> tuple[bytes, ChunkFetchError]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
                writer.write(payload)
                await writer.drain()

        async with scripted_server(answer) as port:
            roomy = client(budget=ReplyBudget(8 * MIB))
            tight = client(budget=ReplyBudget(1 * MIB))
            try:
                _, body = await roomy.get("127.0.0.1", port, "/v1/catalog", limit=4 * MIB)
                with pytest.raises(ChunkFetchError) as caught:
                    await tight.get("127.0.0.1", port, "/v1/catalog", limit=4 * MIB)
            finally:
                roomy.close()
                tight.close()
            assert roomy.budget.held_bytes == tight.budget.held_bytes == 0
            assert roomy.budget.peak_bytes <= len(payload) and tight.budget.refused == 1
            return bytes(body), caught.value

    body, error = asyncio.run(scenario())
    assert body == payload
    assert error.reason == "busy" and "refused" in str(error)


# ---- connections per peer -------------------------------------------------------------------


async def _until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until `predicate()` holds; fail the test after 10 seconds."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class _HeldReplies:
    """A keep-alive server's answer that holds every reply until `release` is set, counting
    the connections open at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.open = 0
        self.most = 0
        self.accepted = 0
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.requests += 1
                await self.release.wait()
                writer.write(GOOD)
                await writer.drain()
        finally:
            self.open -= 1


@contextlib.asynccontextmanager
async def held_replies(
    connections: int,
) -> AsyncIterator[tuple[_HeldReplies, ChunkClient, int, tuple[str, int]]]:
    """A server that holds its replies until released, and a client allowed `connections`
    connections to it: (server, client, port, the client's slot key)."""
    server = _HeldReplies()
    async with scripted_server(server) as port:
        chunks = client(connections_per_peer=connections)
        try:
            yield server, chunks, port, ("127.0.0.1", port)
        finally:
            chunks.close()


def test_requests_beyond_the_connections_per_peer_wait_and_all_arrive() -> None:
    """Six requests at once to one peer with two connections allowed: two connections open,
    four requests wait (none fails), and all six get their chunk over those two."""

    async def scenario() -> None:
        async with held_replies(2) as (server, chunks, port, key):
            fetches = [
                asyncio.ensure_future(chunks.fetch("127.0.0.1", port, f"/c{i}", 16))
                for i in range(6)
            ]
            await _until(lambda: server.requests == 2 and chunks.slots.waiting(key) == 4)
            assert (server.accepted, chunks.slots.held(key)) == (2, 2)
            assert not any(fetch.done() for fetch in fetches)
            server.release.set()
            bodies = await asyncio.gather(*fetches)
            assert [bytes(body) for body in bodies] == [CHUNK] * 6
            assert (server.accepted, server.most) == (2, 2)
            assert (chunks.slots.held(key), chunks.slots.waiting(key)) == (0, 0)

    asyncio.run(scenario())


def test_a_request_cancelled_while_waiting_for_a_connection_leaks_no_slot() -> None:
    """One connection allowed, held by a request whose reply is late: a second request waits,
    is cancelled, and leaves the queue; the first completes, and the slot is free again."""

    async def scenario() -> None:
        async with held_replies(1) as (server, chunks, port, key):
            first = asyncio.ensure_future(chunks.fetch("127.0.0.1", port, "/a", 16))
            second = asyncio.ensure_future(chunks.fetch("127.0.0.1", port, "/b", 16))
            await _until(lambda: server.requests == 1 and chunks.slots.waiting(key) == 1)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            assert (chunks.slots.held(key), chunks.slots.waiting(key)) == (1, 0)
            server.release.set()
            assert bytes(await first) == CHUNK
            assert chunks.slots.held(key) == 0
            # The one slot serves the next request at once, over the kept-alive connection.
            assert bytes(await chunks.fetch("127.0.0.1", port, "/c", 16)) == CHUNK
            assert (server.accepted, server.requests) == (1, 2)
            assert (chunks.slots.held(key), chunks.slots.waiting(key)) == (0, 0)

    asyncio.run(scenario())


def test_a_slot_handed_to_a_waiter_being_cancelled_goes_to_the_next() -> None:
    """The slot released to a waiter whose task is cancelled before it resumes is passed on:
    neither lost nor held twice."""

    async def scenario() -> None:
        slots = PeerSlots(1)
        key = ("127.0.0.9", 1)
        await slots.acquire(key)
        second = asyncio.ensure_future(slots.acquire(key))
        third = asyncio.ensure_future(slots.acquire(key))
        await _until(lambda: slots.waiting(key) == 2)
        slots.release(key)  # handed to the second...
        second.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await second
        await asyncio.wait_for(third, 10)  # the third has it
        assert (slots.held(key), slots.waiting(key)) == (1, 0)
        slots.release(key)
        assert (slots.held(key), slots.waiting(key)) == (0, 0)
        # A waiter cancelled while still queued, then a release: nobody is handed a slot twice.
        await slots.acquire(key)
        fourth = asyncio.ensure_future(slots.acquire(key))
        await _until(lambda: slots.waiting(key) == 1)
        fourth.cancel()
        slots.release(key)  # the cancelled waiter is still in the queue: skipped
        with pytest.raises(asyncio.CancelledError):
            await fourth
        assert (slots.held(key), slots.waiting(key)) == (0, 0)

    asyncio.run(scenario())


def test_a_new_connection_closed_unanswered_is_busy_and_a_reused_one_is_not() -> None:
    """A server turning a connection away (closed before any reply byte, as the connection
    guard does) makes the request fail as 'busy'; a kept-alive connection closed after a reply
    does not."""

    async def scenario() -> tuple[str, str]:
        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")

        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(GOOD)
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")

        chunks = client()
        reasons = []
        try:
            async with scripted_server(refuse) as port:
                with pytest.raises(ChunkFetchError) as busy:
                    await chunks.fetch("127.0.0.1", port, "/a", 16)
                reasons.append(busy.value.reason)
            async with scripted_server(once) as port:
                assert bytes(await chunks.fetch("127.0.0.1", port, "/a", 16)) == CHUNK
                with pytest.raises(RemoteProtocolError) as cut:
                    await chunks.fetch("127.0.0.1", port, "/b", 16)
                reasons.append(type(cut.value).__name__)
        finally:
            chunks.close()
        return reasons[0], reasons[1]

    assert asyncio.run(scenario()) == ("busy", "TruncatedReply")
