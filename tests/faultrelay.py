"""A fault-injecting TCP relay of the test suite's own: every piece of data, both ways, is held
for DELAY_MS before it is passed on. Used where the kernel has no netem qdisc.

Usage: python faultrelay.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait((0.0, b""))
    await asyncio.gather(sender, return_exceptions=True)


async def main(listen: int, host: str, port: int, delay_ms: float) -> None:
    delay = delay_ms / 1000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            pipe(reader, up_writer, delay), pipe(up_reader, writer, delay), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "0.0.0.0", listen)
    print("relaying", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
