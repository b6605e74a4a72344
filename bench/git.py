#!/usr/bin/env python3
"""czc's git filter against Git LFS, the local steps, on one machine.

    python3 bench/git.py             # 1,000 files of 1-100 KiB and one 1 GiB file
    python3 bench/git.py --quick     # 200 files and 128 MiB

For each tool, in a repository with its filter installed (`czc install` +
`czc track`, `git lfs install` + `git lfs track`):
  * git add + git commit of the 1,000 files, then of the 1 GiB file
  * git checkout of a branch without the data, and back (smudge of everything)
  * a fresh clone with an empty cache: czc's filter fetches from a folder remote during
    the checkout (delayed, one parallel batch); Git LFS clones with GIT_LFS_SKIP_SMUDGE=1
    and then runs `git lfs pull` from the origin (its file:// standalone transfer)
Goal: czc faster than Git LFS on every step. Each step runs --runs times (fresh
repositories each time, the two tools taking turns to go first); the table shows
medians.
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
from run import REPO, fmt_s, git_env, sh, write_random  # noqa: E402


def ensure_tools():
    if not shutil.which("git-lfs"):
        print("installing git-lfs (apt-get)", file=sys.stderr)
        sh("apt-get update -qq")
        sh(["apt-get", "install", "-y", "-qq", "git-lfs"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    print("building czc (release)", file=sys.stderr)
    sh(["cargo", "build", "--release", "--quiet"], cwd=REPO, quiet=False)
    return REPO / "target" / "release" / "czc"


def make_files(root, count):
    import random
    rng = random.Random(7)
    for i in range(count):
        folder = root / f"d{i // 100:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04}.bin").write_bytes(os.urandom(rng.randint(1024, 100 * 1024)))


def step(cmd, cwd, env):
    """One timed shell step, from a quiet disk."""
    os.sync()
    time.sleep(1)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed: {cmd} in {cwd}\n{result.stderr.decode(errors='replace')}")
    return elapsed


def drop_big_files(work):
    """Frees the disk a run's big files hold, and nothing else: deleting thousands of
    small files would slow every file creation that follows for a minute or more
    (ext4 skips recently deleted inodes when allocating), and it would be the next tool
    that paid for it."""
    for folder, _, files in os.walk(work):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink() and path.stat().st_size > (1 << 20):
                path.unlink()


def run_tool(tool, work, env, small_src, big_src):
    """Times the steps for one tool in a fresh folder `work`; returns {step: s}."""
    work.mkdir(parents=True)
    repo = work / "repo"
    origin = work / "origin.git"
    sh(["git", "init", "-q", "-b", "main", str(repo)], env=env)
    sh(["git", "init", "-q", "--bare", str(origin)], env=env)
    sh(["git", "remote", "add", "origin", str(origin)], cwd=repo, env=env)
    if tool == "czc":
        env = {**env, "CZC_CACHE_DIR": str(work / "cache"), "CZC_CACHE_SIZE_LIMIT": "100GiB"}
        # User-level filter config (as a user would have), so the clone gets it too.
        sh("czc install && czc track '*.bin'", cwd=repo, env=env)
        sh(f"czc remote add team {work / 'team'} --default", cwd=repo, env=env)
    else:
        sh("git lfs install && git lfs track '*.bin'", cwd=repo, env=env)
    sh("git add -A && git commit -qm setup && git branch before", cwd=repo, env=env)
    times = {}
    shutil.copytree(small_src, repo / "small")
    times["add+commit small"] = step("git add -A && git commit -qm small", repo, env)
    shutil.copyfile(big_src, repo / "big.bin")
    times["add+commit big"] = step("git add -A && git commit -qm big", repo, env)
    times["checkout away"] = step("git checkout -q before", repo, env)
    times["checkout back"] = step("git checkout -q main", repo, env)
    # Publish: czc's pre-push hook uploads to the folder remote; LFS pushes to the
    # origin's lfs/ folder through its standalone file:// transfer.
    sh("git push -q origin main", cwd=repo, env=env)
    clone = work / "clone"
    if tool == "czc":
        clone_env = {**env, "CZC_CACHE_DIR": str(work / "clone-cache")}
        times["fresh clone"] = step(f"git clone -q {origin} {clone}", work, clone_env)
    else:
        times["fresh clone"] = step(
            f"GIT_LFS_SKIP_SMUDGE=1 git clone -q {origin} {clone} && cd {clone} && git lfs pull",
            work, env)
    check = subprocess.run(["cmp", str(big_src), str(clone / "big.bin")])
    if check.returncode != 0:
        raise SystemExit(f"{tool}: the clone's big.bin differs from the original")
    drop_big_files(work)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="128 MiB and 200 files")
    parser.add_argument("--work", default=os.environ.get("CZC_BENCH_DIR", "/tmp/czc-bench") + "-git")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.files = 128, 200
    czc = ensure_tools()
    work = Path(args.work)
    # Leftovers of an earlier run are moved aside and deleted after the timings (see
    # drop_big_files for why deleting many files first would skew them).
    leftover = work.with_name(f"{work.name}.old-{os.getpid()}")
    if work.exists():
        work.rename(leftover)
    work.mkdir(parents=True)
    home = work / "home"
    home.mkdir()
    env = git_env(home)
    env["PATH"] = f"{czc.parent}:{env['PATH']}"
    sh("git config --global init.defaultBranch main", env=env)
    small_src, big_src = work / "small-src", work / "big-src.bin"
    print(f"preparing {args.files} files and a {args.size_mib} MiB file in {work}", file=sys.stderr)
    make_files(small_src, args.files)
    write_random(big_src, args.size_mib << 20)
    started = time.time()
    results = {"czc": [], "git-lfs": []}
    for run in range(args.runs):
        # Alternate who goes first, so neither always meets the other's leftovers.
        order = list(results) if run % 2 == 0 else list(reversed(results))
        for tool in order:
            print(f"running {tool} (run {run + 1})", file=sys.stderr)
            results[tool].append(run_tool(tool, work / f"{tool}-{run}", env, small_src, big_src))
    steps = list(results["czc"][0])
    labels = {
        "add+commit small": f"git add + commit, {args.files} files (1–100 KiB)",
        "add+commit big": f"git add + commit, one {args.size_mib} MiB file",
        "checkout away": "git checkout of a branch without the data",
        "checkout back": "git checkout back (smudge everything)",
        "fresh clone": "fresh clone, empty cache (LFS: skip-smudge clone + git lfs pull)",
    }
    print()
    print(f"czc vs Git LFS through git, median of {args.runs} run(s), 2 cores, local folder remote")
    print()
    print("| step | czc | Git LFS | czc vs LFS |")
    print("| --- | --- | --- | --- |")
    for name in steps:
        mine = statistics.median(r[name] for r in results["czc"])
        theirs = statistics.median(r[name] for r in results["git-lfs"])
        ratio = theirs / mine if mine > 0 else float("inf")
        verdict = f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.1f}× slower"
        print(f"| {labels[name]} | {fmt_s(mine)} | {fmt_s(theirs)} | {verdict} |")
    print()
    print(f"(git benchmarks took {time.time() - started:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(leftover, ignore_errors=True)


if __name__ == "__main__":
    main()
