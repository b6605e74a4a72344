#!/usr/bin/env python3
"""czc benchmarks: one command, one table.

    python3 bench/run.py                 # 1 GiB file, 20,000 small files, 3 runs each
    python3 bench/run.py --quick         # 256 MiB, 5,000 files: a smoke run
    python3 bench/run.py --skip-remote   # the local steps only (bench/remote.py: remote only)

Compares, in one run on this machine with a warm page cache:
  * czc save of a big file      vs  b3sum + cp of the same file   (target ratio <= 1.3)
  * peak heap (RssAnon) of that save                               (target < 100 MiB)
  * no-op czc status of a folder of small files vs git status of the same files
    committed in a git repo                                         (target ratio <= 2)
  * czc checkout of that folder into an empty workspace vs cp -r   (target ratio <= 1.5)
and the same data through DVC (dvc add / status / checkout) and Git LFS (git add with a
tracked pattern / git status / git checkout --). Missing tools are installed (b3sum and
git-lfs from Debian, dvc from PyPI). Every timing is the median of --runs runs.
Then the remote table of bench/remote.py (push/pull to a folder and an S3 server, vs DVC).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sh(cmd, cwd=None, env=None, check=True, quiet=True):
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, cwd=cwd, env=env, check=check, stdout=out, stderr=out, shell=isinstance(cmd, str))


def ensure_tools():
    missing_apt = [pkg for tool, pkg in [("b3sum", "b3sum"), ("git-lfs", "git-lfs")] if not shutil.which(tool)]
    if missing_apt:
        print(f"installing {' '.join(missing_apt)} (apt-get)", file=sys.stderr)
        sh("apt-get update -qq")
        sh(["apt-get", "install", "-y", "-qq", *missing_apt], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not shutil.which("dvc"):
        print("installing dvc (pip)", file=sys.stderr)
        sh([sys.executable, "-m", "pip", "install", "-q", "dvc"])
    print("building czc (release)", file=sys.stderr)
    sh(["cargo", "build", "--release", "--quiet"], cwd=REPO, quiet=False)
    return REPO / "target" / "release" / "czc"


def timed(cmd, cwd, env, setup=None, runs=3):
    """Median wall time of `cmd` over `runs` runs, `setup` (untimed) before each."""
    times = []
    for _ in range(runs):
        if setup:
            setup()
        # Start from a quiet disk: no run pays for the previous one's pending writeback
        # (this virtual disk stays slow for a moment after a big flush).
        os.sync()
        time.sleep(1)
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"benchmark step failed: {cmd}\n{result.stderr.decode(errors='replace')}")
        times.append(elapsed)
    return statistics.median(times)


def timed_pair(mine, reference, runs=3):
    """Median times of two (cmd, cwd, env, setup) steps, run alternately so both see the
    same machine state (page cache, ext4's recently freed inodes, neighbours' load)."""
    a, b = [], []
    for _ in range(runs):
        a.append(timed(*mine, runs=1))
        b.append(timed(*reference, runs=1))
    return statistics.median(a), statistics.median(b)


def wait_sampling_rss(proc, every):
    """Waits for `proc`, sampling /proc/<pid>/status every `every` s; the peak RssAnon in KiB."""
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(every)
    return peak


def peak_rss_anon(cmd, cwd, env):
    """Runs `cmd`, sampling /proc/<pid>/status; returns the peak RssAnon in KiB."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    peak = wait_sampling_rss(proc, 0.001)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed: {cmd}")
    return peak


def write_random(path, size):
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 16 << 20)
            out.write(os.urandom(n))
            left -= n


def make_small_files(root, count, max_bytes=4096):
    import random
    rng = random.Random(42)
    per_dir = 100
    for i in range(count):
        folder = root / f"d{i // per_dir:04}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i % per_dir:03}.bin").write_bytes(os.urandom(rng.randint(1024, max_bytes)))


def remove_path(path):
    """Removes a file (read-only ones too) or a folder, if there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.chmod(0o644)
        path.unlink()


def replace_with_copy(path, source):
    """Puts a fresh copy of the file or folder `source` at `path`."""
    remove_path(path)
    if source.is_dir():
        shutil.copytree(source, path)
    else:
        shutil.copyfile(source, path)


def git_env(home):
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
           "DVC_NO_ANALYTICS": "1"}
    for key in [k for k in env if k.startswith("CZC_")]:
        del env[key]
    return env


def fmt_s(seconds):
    return "—" if seconds is None else (f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256 MiB and 5,000 files")
    parser.add_argument("--work", default=os.environ.get("CZC_BENCH_DIR", "/tmp/czc-bench"))
    parser.add_argument("--skip-others", action="store_true", help="skip DVC and Git LFS")
    parser.add_argument("--skip-remote", action="store_true", help="skip push/pull (bench/remote.py)")
    parser.add_argument("--other-runs", type=int, default=1, help="runs of each remote DVC step (slow)")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.files = 256, 5000

    czc = str(ensure_tools())
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = work / "home"
    home.mkdir()
    env = git_env(home)
    czc_env = {**env, "CZC_CACHE_DIR": str(work / "czc-cache"), "CZC_CACHE_SIZE_LIMIT": "100GiB"}
    size = args.size_mib << 20
    runs = args.runs
    rows = []

    print(f"preparing {args.size_mib} MiB file and {args.files} small files in {work}", file=sys.stderr)
    source = work / "big.bin"
    write_random(source, size)
    small_src = work / "small-src"
    make_small_files(small_src, args.files)
    sh(f"cat {source} > /dev/null")

    # ---------- big file ----------
    proj = work / "czc-proj"
    proj.mkdir()
    sh(["git", "init", "-q"], cwd=proj, env=env)
    shutil.copyfile(source, proj / "big.bin")
    floor_dest = work / "floor-copy.bin"

    def reset_czc():
        # A cache that exists (index, folders) but lacks this file: the everyday save.
        shutil.rmtree(work / "czc-cache" / "objects", ignore_errors=True)
        shutil.rmtree(work / "czc-cache" / "state", ignore_errors=True)

    sh([czc, "cache", "info"], cwd=proj, env=czc_env)  # create the cache once
    czc_save, floor = timed_pair(
        ([czc, "save", "big.bin"], proj, czc_env, reset_czc),
        (f"b3sum {source} && cp {source} {floor_dest}", work, env, lambda: floor_dest.unlink(missing_ok=True)),
        runs=runs)
    reset_czc()
    rss_kib = peak_rss_anon([czc, "save", "big.bin"], proj, czc_env)
    sh([czc, "status"], cwd=proj, env=czc_env)
    time.sleep(0.2)
    sh([czc, "status"], cwd=proj, env=czc_env)
    czc_status_big = timed([czc, "status"], proj, czc_env, runs=runs)
    obj = next((work / "czc-cache" / "objects").rglob("*"))
    while obj.is_dir():
        obj = next(obj.iterdir())
    czc_checkout_big, cp_floor = timed_pair(
        ([czc, "checkout"], proj, czc_env, lambda: (proj / "big.bin").unlink(missing_ok=True)),
        (f"cp {obj} {floor_dest}", work, env, lambda: floor_dest.unlink(missing_ok=True)),
        runs=runs)
    floor_dest.unlink(missing_ok=True)

    big = {"czc": {"add": czc_save, "status": czc_status_big, "checkout": czc_checkout_big}}

    # ---------- small files ----------
    gitref = work / "git-ref"
    shutil.copytree(small_src, gitref / "ds")
    sh(["git", "init", "-q"], cwd=gitref, env=env)
    os.sync()
    start = time.perf_counter()
    sh(["git", "add", "-A"], cwd=gitref, env=env)
    git_add = time.perf_counter() - start  # one run, as czc's save of the folder
    sh(["git", "commit", "-qm", "ref"], cwd=gitref, env=env)
    sh(["git", "status"], cwd=gitref, env=env)

    sproj = work / "czc-small"
    shutil.copytree(small_src, sproj / "ds")
    sh(["git", "init", "-q"], cwd=sproj, env=env)
    os.sync()
    start = time.perf_counter()
    sh([czc, "save", "ds"], cwd=sproj, env=czc_env)
    czc_save_small = time.perf_counter() - start
    time.sleep(0.2)
    sh([czc, "status"], cwd=sproj, env=czc_env)
    czc_status_small, git_status = timed_pair(
        ([czc, "status"], sproj, czc_env, None),
        (["git", "status"], gitref, env, None),
        runs=max(runs, 15))
    cp_dest = work / "cp-copy"
    czc_checkout_small, cp_r = timed_pair(
        ([czc, "checkout"], sproj, czc_env, lambda: shutil.rmtree(sproj / "ds", ignore_errors=True)),
        (["cp", "-r", str(small_src), str(cp_dest)], work, env, lambda: shutil.rmtree(cp_dest, ignore_errors=True)),
        runs=runs)
    shutil.rmtree(cp_dest, ignore_errors=True)
    small = {"czc": {"add": czc_save_small, "status": czc_status_small, "checkout": czc_checkout_small}}

    # ---------- DVC and Git LFS ----------
    if not args.skip_others:
        for tool in ["dvc", "git-lfs"]:
            print(f"running {tool}", file=sys.stderr)
            big[tool], small[tool] = run_other(tool, work, env, source, small_src, runs)

    # ---------- table ----------
    def ratio(a, b):
        return f"{a / b:.2f}" if b else "—"

    print()
    print(f"czc benchmarks — {args.size_mib} MiB file, {args.files} files of 1–4 KiB, median of {runs} runs, "
          f"{os.cpu_count()} cores")
    print()
    print("| step | czc | reference | czc / reference | target | DVC | Git LFS |")
    print("| --- | --- | --- | --- | --- | --- | --- |")

    def other(data, tool, step):
        return fmt_s(data.get(tool, {}).get(step))

    rows = [
        (f"save {args.size_mib} MiB file", big["czc"]["add"], "b3sum + cp", floor, "≤ 1.3", big, "add"),
        (f"no-op status, {args.size_mib} MiB file", big["czc"]["status"], "—", None, "", big, "status"),
        (f"checkout {args.size_mib} MiB file", big["czc"]["checkout"], "cp", cp_floor, "", big, "checkout"),
        (f"save {args.files} files", small["czc"]["add"], "git add", git_add, "", small, "add"),
        (f"no-op status, {args.files} files", small["czc"]["status"], "git status", git_status, "≤ 2", small, "status"),
        (f"checkout {args.files} files", small["czc"]["checkout"], "cp -r", cp_r, "≤ 1.5", small, "checkout"),
    ]
    for name, mine, ref_name, ref, target, data, step in rows:
        ref_text = f"{ref_name} {fmt_s(ref)}" if ref is not None else "—"
        print(f"| {name} | {fmt_s(mine)} | {ref_text} | {ratio(mine, ref) if ref else '—'} | {target} "
              f"| {other(data, 'dvc', step)} | {other(data, 'git-lfs', step)} |")
    print(f"| peak heap (RssAnon) of save {args.size_mib} MiB | {rss_kib / 1024:.1f} MiB | — | — | < 100 MiB | — | — |")
    print()
    print("DVC steps: dvc add / dvc status / dvc checkout. Git LFS steps: git add (tracked pattern) / "
          "git status / git checkout -- <path>.")
    sys.stdout.flush()

    if not args.skip_remote:
        import remote
        _, s3_binary = remote.ensure_remote_tools(not args.skip_others)
        results = remote.run_remote(czc, s3_binary, work, env, source, small_src, runs, args.other_runs,
                                    not args.skip_others, args.size_mib, args.files)
        remote.print_table(results, args.size_mib, args.files, runs, args.other_runs)


def run_other(tool, work, env, source, small_src, runs):
    """The same steps through DVC or Git LFS; returns (big, small) timings."""
    results = []
    for kind in ["big", "small"]:
        proj = work / f"{tool}-{kind}"
        proj.mkdir()
        sh(["git", "init", "-q"], cwd=proj, env=env)
        target = "big.bin" if kind == "big" else "ds"

        def place():
            replace_with_copy(proj / target, source if kind == "big" else small_src)

        if tool == "dvc":
            sh(["dvc", "init", "-q"], cwd=proj, env=env)

            def setup_add():
                shutil.rmtree(proj / ".dvc" / "cache", ignore_errors=True)
                (proj / f"{target}.dvc").unlink(missing_ok=True)
                place()

            add = timed(["dvc", "add", "-q", target], proj, env, setup=setup_add, runs=runs)
            sh(["dvc", "status"], cwd=proj, env=env)
            status = timed(["dvc", "status"], proj, env, runs=runs)

            def setup_checkout():
                path = proj / target
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

            checkout = timed(["dvc", "checkout", "-q"], proj, env, setup=setup_checkout, runs=runs)
        else:
            sh(["git", "lfs", "install", "--local"], cwd=proj, env=env)
            pattern = "*.bin"
            sh(["git", "lfs", "track", pattern], cwd=proj, env=env)
            sh(["git", "add", ".gitattributes"], cwd=proj, env=env)
            sh(["git", "commit", "-qm", "attrs"], cwd=proj, env=env)

            def setup_add():
                sh(["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", target], cwd=proj, env=env)
                shutil.rmtree(proj / ".git" / "lfs" / "objects", ignore_errors=True)
                place()

            add = timed(["git", "add", target], proj, env, setup=setup_add, runs=runs)
            sh(["git", "commit", "-qm", "data"], cwd=proj, env=env)
            sh(["git", "status"], cwd=proj, env=env)
            status = timed(["git", "status"], proj, env, runs=max(runs, 10))

            def setup_checkout():
                path = proj / target
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

            checkout = timed(["git", "checkout", "--", target], proj, env, setup=setup_checkout, runs=runs)
        results.append({"add": add, "status": status, "checkout": checkout})
    return results[0], results[1]


if __name__ == "__main__":
    main()
