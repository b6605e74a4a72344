#!/usr/bin/env python3
"""The network benchmarks in one command: everything through bench/netproxy.py.

    python3 bench/network.py               # 20 ms round trip; about 40 minutes
    python3 bench/network.py --rtt 50 --mbit 500 --quick

Runs, and prints the tables of:
  * bench/remote.py --rtt R --files 100000 --max-kib 16: push and pull of 100,000 files
    of 1-16 KiB and of a 1 GiB file, czc against s5cmd and DVC on the same link
  * bench/chunks.py --rtt R: a 4 GiB file, 1 MiB of it changed and pushed again, a push
    and a pull killed at half and run again, against DVC
`--quick`: 20,000 files, 256 MiB and a 1 GiB chunked file.
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt", type=float, default=20)
    parser.add_argument("--mbit", type=float, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-others", action="store_true", help="czc alone (no s5cmd, DVC)")
    args = parser.parse_args()
    link = ["--rtt", f"{args.rtt:g}"] + (["--mbit", f"{args.mbit:g}"] if args.mbit else [])
    others = ["--skip-others"] if args.skip_others else []
    files, big, chunked = ("20000", "256", "1024") if args.quick else ("100000", "1024", "4096")
    steps = [
        [sys.executable, str(HERE / "remote.py"), *link, *others, "--files", files, "--max-kib", "16",
         "--size-mib", big, "--runs", "1", "--other-runs", "1"],
        [sys.executable, str(HERE / "chunks.py"), *link, *others, "--size-mib", chunked],
    ]
    for step in steps:
        print(f"$ {' '.join(step[1:])}", file=sys.stderr)
        if subprocess.run(step).returncode != 0:
            raise SystemExit(f"failed: {' '.join(step)}")


if __name__ == "__main__":
    main()
