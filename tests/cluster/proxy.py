"""A TCP forwarder: the stand-in for a cloud load balancer (round robin over the Service's pods, per
connection, as an L4 balancer does) and for ``kubectl port-forward`` (one pod).

``python proxy.py LISTEN_HOST LISTEN_PORT TARGET_HOST:PORT [TARGET_HOST:PORT ...]``
"""

from __future__ import annotations

import asyncio
import itertools
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(host: str, port: int, targets: list[tuple[str, int]]) -> None:
    turn = itertools.cycle(targets)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*next(turn))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(forward, host, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    endpoints = [(target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1])) for target in sys.argv[3:]]
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), endpoints))
