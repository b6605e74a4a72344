#!/usr/bin/env python3
"""A network that behaves like the internet, in user space (this kernel has no netem): a
TCP proxy that delays every byte by half a round trip in each direction and caps the
bandwidth of each direction of the link, shared by all connections through it.

    python3 bench/netproxy.py --target 127.0.0.1:9000 --rtt 20 --mbit 200
    # prints: http://127.0.0.1:<port>   (point an S3 endpoint or a czc remote at it)
    python3 bench/netproxy.py --selftest   # measures what it adds, against a local server

From Python (the benchmarks): `with NetProxy("127.0.0.1:9000", rtt_ms=20) as url: ...`.

A new connection costs one round trip before its first byte moves (the TCP handshake);
then each chunk read from one side is written to the other no sooner than rtt/2 after it
arrived, in order, and no faster than the link's rate. Queues are unbounded: a bandwidth
cap delays bytes, it never drops them (TCP would retransmit; the cost is the same time).
"""

import argparse
import asyncio
import socket
import sys
import threading
import time


class _Link:
    """One direction of the shared link: when it is next free, at `rate` bytes/s."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = 0.0
        self.bytes = 0  # every byte that crossed this direction (benchmarks read it)

    def schedule(self, arrived, delay, size):
        self.bytes += size
        deliver = arrived + delay
        if self.rate:
            start = max(deliver, self.free_at)
            self.free_at = start + size / self.rate
            deliver = self.free_at
        return deliver


class NetProxy:
    """The proxy, run on its own thread with its own event loop."""

    def __init__(self, target, rtt_ms=20.0, mbit=None, listen="127.0.0.1:0"):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.one_way = rtt_ms / 2000.0
        rate = None if not mbit else mbit * 1_000_000 / 8
        self.up = _Link(rate)
        self.down = _Link(rate)
        lhost, lport = listen.rsplit(":", 1)
        self.listen = (lhost, int(lport))
        self.loop = None
        self.server = None
        self.thread = None
        self.url = None
        self.connections = 0

    async def _pump(self, reader, writer, link):
        queue = asyncio.Queue()

        async def deliver():
            while True:
                when, chunk = await queue.get()
                if chunk is None:
                    break
                pause = when - self.loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(chunk)
                await writer.drain()
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(64 << 10)
                now = self.loop.time()
                if not chunk:
                    await queue.put((link.schedule(now, self.one_way, 0), None))
                    break
                await queue.put((link.schedule(now, self.one_way, len(chunk)), chunk))
        except (ConnectionError, OSError):
            await queue.put((0, None))
        try:
            await sender
        except (ConnectionError, OSError):
            pass

    async def _serve(self, client_reader, client_writer):
        self.connections += 1
        # The handshake: a round trip before anything moves.
        await asyncio.sleep(2 * self.one_way)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        for w in (client_writer, server_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            self._pump(client_reader, server_writer, self.up),
            self._pump(server_reader, client_writer, self.down),
            return_exceptions=True,
        )
        for w in (client_writer, server_writer):
            w.close()

    def start(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)

            async def begin():
                self.server = await asyncio.start_server(self._serve, *self.listen)
                host, port = self.server.sockets[0].getsockname()[:2]
                self.url = f"http://{host}:{port}"
                ready.set()

            self.loop.run_until_complete(begin())
            self.loop.run_forever()
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self.url

    def stop(self):
        if self.loop is None:
            return

        async def shutdown():
            # Keep-alive connections still open: cancelled, not left pending.
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def selftest(rtt_ms, mbit):
    """Starts a local HTTP server, then times a small and a big GET direct and through
    the proxy: what the proxy adds should be about one RTT per request (plus one for a new
    connection), and the big one should take size / rate."""
    import http.server
    import urllib.request

    body = b"x" * (8 << 20)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            data = body if self.path == "/big" else b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    direct = f"http://127.0.0.1:{server.server_address[1]}"

    def timed(url):
        start = time.perf_counter()
        with urllib.request.urlopen(url) as answer:
            answer.read()
        return time.perf_counter() - start

    with NetProxy(f"127.0.0.1:{server.server_address[1]}", rtt_ms=rtt_ms, mbit=mbit) as proxied:
        rows = [
            ("small GET, direct", timed(direct + "/small")),
            ("small GET, through the proxy (new connection)", timed(proxied + "/small")),
            ("8 MiB GET, direct", timed(direct + "/big")),
            ("8 MiB GET, through the proxy", timed(proxied + "/big")),
        ]
    server.shutdown()
    print(f"| request (rtt {rtt_ms} ms, {mbit or 'no'} Mbit/s cap) | time |")
    print("| --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.1f} ms |")
    expected_small = 2 * rtt_ms
    print(f"expected through the proxy: small ≈ {expected_small} ms (handshake + request), "
          + (f"8 MiB ≈ {8 * 8.389 / mbit * 1000 + expected_small:.0f} ms" if mbit else "8 MiB ≈ direct + 2 RTT"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="host:port to forward to")
    parser.add_argument("--rtt", type=float, default=20.0, help="round trip in ms (default 20)")
    parser.add_argument("--mbit", type=float, default=None, help="bandwidth cap per direction")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    if args.selftest:
        selftest(args.rtt, args.mbit)
        return
    if not args.target:
        parser.error("--target host:port is needed (or --selftest)")
    proxy = NetProxy(args.target, rtt_ms=args.rtt, mbit=args.mbit, listen=args.listen)
    print(proxy.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    sys.exit(main())
