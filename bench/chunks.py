#!/usr/bin/env python3
"""czc chunked big objects over an internet-like link: edits and interrupted transfers.

    python3 bench/chunks.py                    # 4 GiB file, S3 at 20 ms (bench/netproxy.py)
    python3 bench/chunks.py --size-mib 1024 --skip-others

One run each, on the tests' S3 server behind bench/netproxy.py, which counts every byte
that crosses it:
  * push of the file, then 1 MiB rewritten in its middle, saved and pushed again
    (goal: the second push sends at most 16 MiB and takes at most 5% of the first);
    the same with `dvc add` + `dvc push` (DVC resends the whole file)
  * a push killed (SIGKILL) once half the file has gone up, then run again, and the same
    for a pull into an empty cache (goal: at most 10% of the file's bytes sent twice)
  * peak heap (RssAnon) of the first push and of a pull (goal: under 200 MiB)
Needs about 6x the file's size of free disk.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote import ACCESS_KEY, SECRET_KEY, S3Server, ensure_remote_tools  # noqa: E402
from run import fmt_s, git_env, sh, wait_sampling_rss, write_random  # noqa: E402

MIB = 1 << 20


def run_measured(cmd, cwd, env, proxy):
    """Runs `cmd`; returns (seconds, bytes up, bytes down, peak RssAnon KiB)."""
    up, down = proxy.up.bytes, proxy.down.bytes
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = wait_sampling_rss(proc, 0.005)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed: {cmd}: {proc.stderr.read().decode()}")
    return seconds, proxy.up.bytes - up, proxy.down.bytes - down, peak


def killed_at_half(cmd, cwd, env, proxy, size, direction):
    """Starts `cmd`, SIGKILLs it once half of `size` has crossed the link in
    `direction` ("up"/"down"); returns the bytes that had crossed."""
    link = proxy.up if direction == "up" else proxy.down
    before = link.bytes
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and link.bytes - before < size // 2:
        time.sleep(0.002)
    if proc.poll() is not None:
        raise SystemExit(f"{cmd} finished before half the bytes crossed; use a bigger file")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return link.bytes - before


def rewrite_middle(path, size):
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(MIB))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=4096)
    parser.add_argument("--rtt", type=float, default=20)
    parser.add_argument("--mbit", type=float, default=None)
    parser.add_argument("--skip-others", action="store_true", help="skip DVC")
    parser.add_argument("--work", default=os.environ.get("CZC_BENCH_DIR", "/tmp/czc-bench") + "-chunks")
    args = parser.parse_args()
    size = args.size_mib * MIB
    czc, s3_binary = ensure_remote_tools(not args.skip_others)
    czc = str(czc)
    work = Path(args.work)
    leftovers = []
    if work.exists():
        aside = work.with_name(f"{work.name}.old-{os.getpid()}")
        work.rename(aside)
        leftovers.append(aside)
    work.mkdir(parents=True)
    env = {**git_env(work / "home"), "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    (work / "home").mkdir()
    server = S3Server(s3_binary, work / "s3-root", (args.rtt, args.mbit))
    proxy = server.proxy
    rows = []
    try:
        print(f"preparing a {args.size_mib} MiB file", file=sys.stderr)
        proj = work / "czc"
        proj.mkdir()
        sh(["git", "init", "-q"], cwd=proj, env=env)
        write_random(proj / "model.bin", size)
        czc_env = {**env, "CZC_CACHE_DIR": str(work / "cache"), "CZC_CACHE_SIZE_LIMIT": "1TiB"}
        sh([czc, "save", "model.bin"], cwd=proj, env=czc_env)

        def configure(location):
            (proj / ".czcache.toml").write_text(
                f'[remote]\ndefault = "team"\n\n[remotes.team]\nurl = "s3://czc/{location}"\n'
                f'endpoint = "{server.endpoint}"\n')

        # ---- an edit in the middle ----
        print("czc: push, edit, push", file=sys.stderr)
        configure("edit")
        first = run_measured([czc, "push"], proj, czc_env, proxy)
        rewrite_middle(proj / "model.bin", size)
        sh([czc, "save", "model.bin"], cwd=proj, env=czc_env)
        second = run_measured([czc, "push"], proj, czc_env, proxy)
        rows.append(("czc", first, second))

        # ---- killed at half, run again ----
        print("czc: push killed at half", file=sys.stderr)
        configure("killed")
        sent_before_kill = killed_at_half([czc, "push"], proj, czc_env, proxy, size, "up")
        rerun = run_measured([czc, "push"], proj, czc_env, proxy)
        push_resent = sent_before_kill + rerun[1] - size
        print("czc: pull killed at half", file=sys.stderr)
        clone = work / "clone"
        clone.mkdir()
        sh(["git", "init", "-q"], cwd=clone, env=env)
        shutil.copyfile(proj / ".czcache.toml", clone / ".czcache.toml")
        shutil.copyfile(proj / "model.bin.czc", clone / "model.bin.czc")
        clone_env = {**czc_env, "CZC_CACHE_DIR": str(work / "clone-cache")}
        got_before_kill = killed_at_half([czc, "pull"], clone, clone_env, proxy, size, "down")
        pull_rerun = run_measured([czc, "pull"], clone, clone_env, proxy)
        pull_resent = got_before_kill + pull_rerun[2] - size
        if sh(["cmp", str(proj / "model.bin"), str(clone / "model.bin")], check=False).returncode != 0:
            raise SystemExit("the resumed pull did not reproduce the file")
        fresh = work / "fresh"
        fresh.mkdir()
        sh(["git", "init", "-q"], cwd=fresh, env=env)
        shutil.copyfile(proj / ".czcache.toml", fresh / ".czcache.toml")
        shutil.copyfile(proj / "model.bin.czc", fresh / "model.bin.czc")
        full_pull = run_measured([czc, "pull"], fresh, {**czc_env, "CZC_CACHE_DIR": str(work / "fresh-cache")},
                                 proxy)

        # ---- DVC: the same edit ----
        if not args.skip_others:
            print("dvc: push, edit, push", file=sys.stderr)
            dproj = work / "dvc"
            dproj.mkdir()
            sh(["git", "init", "-q"], cwd=dproj, env=env)
            sh(["dvc", "init", "-q"], cwd=dproj, env=env)
            write_random(dproj / "model.bin", size)
            sh(["dvc", "add", "-q", "model.bin"], cwd=dproj, env=env)
            sh(["dvc", "remote", "add", "-f", "-d", "team", "s3://dvc/edit"], cwd=dproj, env=env)
            sh(["dvc", "remote", "modify", "team", "endpointurl", server.endpoint], cwd=dproj, env=env)
            dfirst = run_measured(["dvc", "push", "-q"], dproj, env, proxy)
            rewrite_middle(dproj / "model.bin", size)
            sh(["dvc", "add", "-q", "model.bin"], cwd=dproj, env=env)
            dsecond = run_measured(["dvc", "push", "-q"], dproj, env, proxy)
            rows.append(("DVC", dfirst, dsecond))
    finally:
        server.stop()
        if sys.exc_info()[0] is not None:
            # A failed run still gives back its disk (a few big files, cheap to delete).
            shutil.rmtree(work, ignore_errors=True)

    net = f"{args.rtt:g} ms round trip" + (f", {args.mbit:g} Mbit/s" if args.mbit else "")
    print()
    print(f"czc chunked objects — one {args.size_mib} MiB file, S3 through bench/netproxy.py ({net}), "
          f"{os.cpu_count()} cores, one run each")
    print()
    print("| step | tool | time | sent | vs first push | goal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tool, first, second in rows:
        print(f"| first push | {tool} | {fmt_s(first[0])} | {first[1] / MIB:.1f} MiB | — | |")
        print(f"| push after 1 MiB changed in the middle | {tool} | {fmt_s(second[0])} | "
              f"{second[1] / MIB:.1f} MiB | {second[0] / first[0] * 100:.1f}% of the time, "
              f"{second[1] / first[1] * 100:.2f}% of the bytes | ≤ 16 MiB, ≤ 5% of the time |")
    print(f"| push killed at half, run again | czc | {fmt_s(rerun[0])} (rerun) | "
          f"{sent_before_kill / MIB:.0f} + {rerun[1] / MIB:.0f} MiB | "
          f"{max(push_resent, 0) / size * 100:.1f}% of the file sent twice | ≤ 10% |")
    print(f"| pull killed at half, run again | czc | {fmt_s(pull_rerun[0])} (rerun) | "
          f"{got_before_kill / MIB:.0f} + {pull_rerun[2] / MIB:.0f} MiB down | "
          f"{max(pull_resent, 0) / size * 100:.1f}% of the file read twice | ≤ 10% |")
    print(f"| pull into an empty cache | czc | {fmt_s(full_pull[0])} | {full_pull[2] / MIB:.0f} MiB down | — | |")
    print(f"| peak heap (RssAnon) first push / pull | czc | {first_rss(rows) / 1024:.1f} / "
          f"{full_pull[3] / 1024:.1f} MiB | — | — | < 200 MiB |")
    # A few big files: cheap to delete, and they would fill the disk run after run.
    for path in leftovers + [work]:
        shutil.rmtree(path, ignore_errors=True)


def first_rss(rows):
    return next(first[3] for tool, first, _ in rows if tool == "czc")


if __name__ == "__main__":
    main()
