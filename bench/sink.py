"""A counting SMTP sink, in its own process: accepts every message on 127.0.0.1, parses nothing.

Speaks just enough SMTP for aiosmtplib (EHLO/HELO, MAIL, RCPT, DATA with dot-termination,
RSET, NOOP, QUIT; no TLS, no AUTH). Per message it keeps the receive time (time.time(), the
moment the terminating dot arrived) and the RCPT address, which the benchmark's recipients
make unique, so lateness needs no header parsing. A sink that parsed or stored each message
would become the bottleneck it is meant to measure around (MEASUREMENTS.md).

Control: one JSON line on stdout at start ({"port": N}); then commands on stdin, one per
line, each answered with one JSON line on stdout:
  count          {"messages", "bytes", "connections", "cpu_s"}
  reset          clears the counters and the recorded messages
  dump PATH      writes the recorded messages to PATH, one "time<TAB>rcpt" line each
  quit           stops the sink (so does the end of stdin: it never outlives its driver)

    python -m bench.sink [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

HOST = "127.0.0.1"
# What aiosmtplib checks for before sending: 8BITMIME and SMTPUTF8 let any message through.
EHLO_REPLY = b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"
END_OF_DATA = b"\r\n.\r\n"


class Counts:
    """What the sink has received since the last reset."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.connections = 0
        self.received: list[tuple[float, bytes]] = []

    def reset(self) -> None:
        self.messages = self.bytes = self.connections = 0
        self.received = []


class SinkProtocol(asyncio.Protocol):
    """One SMTP session: command lines until DATA, then raw bytes until CRLF.CRLF."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = b""
        self.in_data = False
        self.size = 0
        self.rcpt = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.counts.connections += 1
        transport.write(b"220 sink ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.in_data:
                if not self._data():
                    return
            elif not self._command():
                return

    def _data(self) -> bool:
        """Consume message bytes; True once the terminating dot was seen."""
        # Only the tail can hold the terminator: search from the last 4 bytes kept, not anew.
        end = self.buffer.find(END_OF_DATA)
        if end < 0:
            keep = len(self.buffer) - 4
            if keep > 0:
                self.size += keep
                self.buffer = self.buffer[keep:]
            return False
        self.size += end
        self.buffer = self.buffer[end + len(END_OF_DATA) :]
        self.in_data = False
        counts = self.counts
        counts.messages += 1
        counts.bytes += self.size
        counts.received.append((time.time(), self.rcpt))
        self._reply(b"250 2.0.0 queued\r\n")
        return True

    def _command(self) -> bool:
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return False
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        verb = line[:4].upper()
        if verb == b"EHLO":
            self._reply(EHLO_REPLY)
        elif verb == b"MAIL":
            self._reply(b"250 2.1.0 ok\r\n")
        elif verb == b"RCPT":
            self.rcpt = line[8:].strip(b" <>")
            self._reply(b"250 2.1.5 ok\r\n")
        elif verb == b"DATA":
            self.in_data = True
            self.size = 0
            # The terminator may follow the header directly: keep CRLF before the message.
            self.buffer = b"\r\n" + self.buffer
            self._reply(b"354 end with <CRLF>.<CRLF>\r\n")
        elif verb in (b"HELO", b"RSET", b"NOOP"):
            self._reply(b"250 ok\r\n")
        elif verb == b"QUIT":
            self._reply(b"221 bye\r\n")
            assert self.transport is not None
            self.transport.close()
        else:
            self._reply(b"502 5.5.2 not implemented\r\n")
        return True

    def _reply(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def answer(counts: Counts, line: str) -> dict[str, object] | None:
    """One control command -> its JSON answer; None for quit."""
    command, _, argument = line.strip().partition(" ")
    if command == "count":
        return {
            "messages": counts.messages,
            "bytes": counts.bytes,
            "connections": counts.connections,
            "cpu_s": time.process_time(),
        }
    if command == "reset":
        counts.reset()
        return {"ok": True}
    if command == "dump":
        with open(argument, "w", encoding="utf-8") as out:
            for at, rcpt in counts.received:
                out.write(f"{at:.6f}\t{rcpt.decode('utf-8', 'replace')}\n")
        return {"written": len(counts.received)}
    if command in ("quit", ""):
        return None
    return {"error": f"unknown command {command!r}"}


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    counts = Counts()
    server = await loop.create_server(lambda: SinkProtocol(counts), HOST, port)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with server:
        while (line := await reader.readline()) and (reply := answer(counts, line.decode())):
            print(json.dumps(reply), flush=True)


class Sink:
    """The driver's handle on a sink process: start it, ask it, stop it."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls) -> Sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sink",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        hello = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        return cls(process, hello["port"])

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        return json.loads(await asyncio.wait_for(self.process.stdout.readline(), 30))

    async def messages(self) -> int:
        return int((await self.ask("count"))["messages"])

    async def wait_for(self, count: int, *, timeout_s: float, poll_s: float = 0.05) -> int:
        """Until the sink has `count` messages, or `timeout_s` passed: how many it has."""
        deadline = time.monotonic() + timeout_s
        while (got := await self.messages()) < count and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        return got

    async def received(self, path: str) -> list[tuple[float, str]]:
        """(receive time, RCPT address) of every message since the last reset."""
        await self.ask(f"dump {path}")
        with open(path, encoding="utf-8") as dump:
            return [(float(at), rcpt) for at, rcpt in (ln.rstrip("\n").split("\t") for ln in dump)]

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
