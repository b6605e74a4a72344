#!/usr/bin/env python3
"""Two czc builds side by side on the local steps, one table: did a change slow czc down?

    python3 bench/before_after.py <old czc> <new czc> [--files 20000] [--runs 2]

Each run makes a fresh folder of --files files of 1-16 KiB (never deleting a big tree
first: this disk is slow to create files after mass deletes), syncs, then times
`czc save data`, a no-op `czc status`, and `czc checkout` into an empty tree; old and new
alternate, and who goes first alternates too. Best of --runs per step.
Build an old binary with `git worktree add /tmp/old <rev> && cd /tmp/old &&
CARGO_TARGET_DIR=/tmp/old-target cargo build --release`.
"""

import argparse
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path


def timed(cmd, cwd, env):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_run(binary, files, base):
    work = Path(tempfile.mkdtemp(dir=base))
    env = dict(os.environ, CZC_CACHE_DIR=str(work / "cache"), HOME=str(work))
    project = work / "p"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    rng = random.Random(7)
    for i in range(files):
        folder = project / "data" / f"d{i % 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(rng.randbytes(rng.randint(1000, 16000)))
    os.sync()  # the files just written are on disk before anything is timed
    save = timed([binary, "save", "data"], project, env)
    status = timed([binary, "status"], project, env)
    (project / "data").rename(project / "data.orig")
    os.sync()
    checkout = timed([binary, "checkout"], project, env)
    return {"save": save, "no-op status": status, "checkout": checkout}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    args.old, args.new = str(Path(args.old).resolve()), str(Path(args.new).resolve())
    base = tempfile.mkdtemp(prefix="czc-before-after-")
    results = {"old": [], "new": []}
    pair = [("old", args.old), ("new", args.new)]
    for run in range(args.runs):
        # Alternate who goes first: the second of a pair runs while the first's writes
        # are still being flushed, which would bias every pair the same way.
        for label, binary in pair if run % 2 == 0 else reversed(pair):
            results[label].append(one_run(binary, args.files, base))
    print(f"| step ({args.files} files) | old | new | new / old |")
    print("| --- | --- | --- | --- |")
    for step in ("save", "no-op status", "checkout"):
        old = min(r[step] for r in results["old"])
        new = min(r[step] for r in results["new"])
        print(f"| {step} | {old * 1000:.0f} ms | {new * 1000:.0f} ms | {new / old:.2f} |")
    print(f"(best of {args.runs} runs each; folders left in {base})")


if __name__ == "__main__":
    main()
