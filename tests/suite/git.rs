//! Git integration against the real `git` binary: the filter protocol (with delay),
//! hooks, history reading, gc and CI-style pulls. Every repository lives in a temp dir
//! with its own HOME, so the user's git config is never touched.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{bytes as random_bytes, stderr, TestEnv};

#[test]
fn filtered_files_round_trip_through_push_and_a_clone_on_an_empty_cache() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    let big = random_bytes(1, 3 << 20);
    fs::write(repo.join("model.bin"), &big).unwrap();
    fs::write(repo.join("empty.bin"), b"").unwrap();
    fs::write(repo.join("notes.txt"), b"plain git file\n").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "data"]);
    // git stores the marker, not the content.
    let blob = env.git(&repo, &["show", "HEAD:model.bin"]);
    assert!(
        blob.starts_with("version = \"czc/1\"\noid = \"blake3:"),
        "{blob}"
    );
    assert!(blob.contains(&format!("size = {}", big.len())));
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    // The pre-push hook uploads the objects before git pushes the commits.
    let pushed = env.run("git", &repo, "cache", &["push", "-q", "origin", "main"]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(
        stderr(&pushed).contains("pushed 2 objects"),
        "{}",
        stderr(&pushed)
    );
    // A colleague clones with an empty cache: smudge fetches (delayed, one batch).
    let out = env
        .command("git", env.dir.path(), "cache-b")
        .args(["clone", "-q", "origin.git", "b"])
        .env("GIT_TRACE_PACKET", env.temp("trace.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let clone = env.temp("b");
    assert_eq!(fs::read(clone.join("model.bin")).unwrap(), big);
    assert_eq!(fs::read(clone.join("empty.bin")).unwrap(), b"");
    let trace = fs::read_to_string(env.temp("trace.txt")).unwrap();
    assert!(trace.contains("status=delayed"), "smudge was not delayed");
    assert!(trace.contains("command=list_available_blobs"));
    let status = env.ok("git", &clone, "cache-b", &["status", "--porcelain"]);
    assert_eq!(
        status, "",
        "git status must be clean right after a checkout"
    );
}

#[test]
fn clean_and_smudge_are_byte_exact_and_pass_markers_through() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    let run = |args: &[&str], input: &[u8]| -> Output {
        let mut child = env
            .command("czc", &repo, "cache")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    };
    for content in [
        Vec::new(),
        b"x".to_vec(),
        random_bytes(7, 1024),
        random_bytes(8, 1025),
        random_bytes(9, 200_000),
    ] {
        let cleaned = run(&["clean", "f.bin"], &content);
        assert!(cleaned.status.success(), "{}", stderr(&cleaned));
        let marker = cleaned.stdout;
        assert!(marker.starts_with(b"version = \"czc/1\""));
        // Cleaning a marker gives the same marker: re-adding a pointer file is a no-op.
        assert_eq!(run(&["clean", "f.bin"], &marker).stdout, marker);
        let smudged = run(&["smudge", "f.bin"], &marker);
        assert!(smudged.status.success(), "{}", stderr(&smudged));
        assert_eq!(smudged.stdout, content);
    }
    // Content that is not a marker goes through smudge untouched (committed before
    // the pattern was tracked).
    let plain = random_bytes(3, 5000);
    assert_eq!(run(&["smudge", "old.bin"], &plain).stdout, plain);
    // A damaged pointer is an error naming the file, never content.
    let bad = b"version = \"czc/1\"\noid = \"blake3:zz\"\nsize = 3\n";
    let out = run(&["smudge", "data/broken.bin"], bad);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("data/broken.bin") && err.contains("oid"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // With CZC_SKIP_SMUDGE the marker text stays.
    let cleaned = run(&["clean", "f.bin"], b"some data").stdout;
    let kept = env
        .command("czc", &repo, "cache")
        .args(["smudge", "f.bin"])
        .env("CZC_SKIP_SMUDGE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(&cleaned)?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(kept.stdout, cleaned);
}

#[test]
fn a_corrupt_pointer_blob_fails_the_checkout_with_the_file_named() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    fs::write(repo.join("good.bin"), b"good").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "good"]);
    // Commit a damaged marker as the blob itself, bypassing the filter.
    let bad = b"version = \"czc/1\"\noid = \"blake3:1234\"\nsize = 4\n";
    let blob = {
        let mut child = env.spawn_piped(
            "git",
            &repo,
            &["hash-object", "-w", "--no-filters", "--stdin"],
        );
        child.stdin.take().unwrap().write_all(bad).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    env.git(
        &repo,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("100644,{blob},broken.bin"),
        ],
    );
    env.git(&repo, &["commit", "-qm", "broken"]);
    fs::remove_file(repo.join("good.bin")).ok();
    let out = env.run("git", &repo, "cache", &["checkout", "--", "broken.bin"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("czc: error: marker broken.bin") && err.contains("bad oid"),
        "{err}"
    );
}

#[test]
fn a_damaged_cached_object_is_refused_at_checkout_and_fetched_again() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let repo = env.repo("a");
    let content = random_bytes(5, 300 * 1024);
    fs::write(repo.join("data.bin"), &content).unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "data"]);
    // The pre-push hook archives the object on the team remote.
    env.git(&repo, &["push", "-q", "origin", "main"]);
    let marker = env.git(&repo, &["cat-file", "-p", "HEAD:data.bin"]);
    let hex = marker
        .lines()
        .find_map(|line| line.strip_prefix("oid = \"blake3:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a marker blob")
        .to_string();
    // Bit rot in the cache.
    let object = env
        .temp("cache")
        .join("objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).unwrap();
    let mut damaged = content.clone();
    damaged[1000] ^= 0xff;
    fs::write(&object, &damaged).unwrap();
    fs::remove_file(repo.join("data.bin")).unwrap();

    let out = env.run("git", &repo, "cache", &["checkout", "--", "data.bin"]);
    assert!(
        !out.status.success(),
        "a damaged object must fail the checkout"
    );
    let err = stderr(&out);
    assert!(err.contains("data.bin") && err.contains("corrupt"), "{err}");
    // git wrote nothing, and the damaged copy left the cache.
    assert!(!repo.join("data.bin").exists());
    assert!(!object.exists());
    assert!(env.temp("cache").join("quarantine").join(&hex).exists());

    // The next checkout fetches a good copy from the remote.
    env.git(&repo, &["checkout", "--", "data.bin"]);
    assert_eq!(fs::read(repo.join("data.bin")).unwrap(), content);
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
}

#[test]
fn a_thousand_files_check_out_through_one_delayed_batch() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    fs::create_dir_all(repo.join("data")).unwrap();
    for i in 0..1000u64 {
        fs::write(
            repo.join(format!("data/f{i:04}.bin")),
            random_bytes(i, 1024 + (i as usize * 37) % 4096),
        )
        .unwrap();
    }
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "thousand"]);
    env.git(&repo, &["push", "-q", "origin", "main"]);
    let out = env
        .command("git", env.dir.path(), "cache-b")
        .args(["clone", "-q", "origin.git", "b"])
        .env("GIT_TRACE_PACKET", env.temp("trace.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for i in [0u64, 499, 999] {
        assert_eq!(
            fs::read(env.temp(&format!("b/data/f{i:04}.bin"))).unwrap(),
            random_bytes(i, 1024 + (i as usize * 37) % 4096)
        );
    }
    let trace = fs::read_to_string(env.temp("trace.txt")).unwrap();
    assert_eq!(trace.matches("status=delayed").count(), 1000);
    // Everything arrived in the first batch: git asked twice (the batch, then "done").
    assert_eq!(trace.matches("command=list_available_blobs").count(), 2);
    assert_eq!(
        env.ok("git", &env.temp("b"), "cache-b", &["status", "--porcelain"]),
        ""
    );
}

#[test]
fn sidecar_markers_follow_branches_merges_and_rebases() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    fs::write(repo.join("table.csv"), b"v1\n").unwrap();
    env.czc_at(&repo, &["save", "table.csv"]);
    env.git(&repo, &["add", "-A"]);
    env.git(&repo, &["commit", "-qm", "v1"]);
    env.git(&repo, &["checkout", "-q", "-b", "feature"]);
    env.czc_at(&repo, &["unprotect", "table.csv"]);
    fs::write(repo.join("table.csv"), b"v2\n").unwrap();
    env.czc_at(&repo, &["save", "table.csv"]);
    env.git(&repo, &["commit", "-qam", "v2"]);
    // The post-checkout hook restores the data file the marker names.
    env.git(&repo, &["checkout", "-q", "main"]);
    assert_eq!(fs::read(repo.join("table.csv")).unwrap(), b"v1\n");
    env.git(&repo, &["checkout", "-q", "feature"]);
    assert_eq!(fs::read(repo.join("table.csv")).unwrap(), b"v2\n");
    // A merge (post-merge) brings v2 to main.
    env.git(&repo, &["checkout", "-q", "main"]);
    env.git(&repo, &["merge", "-q", "--ff-only", "feature"]);
    assert_eq!(fs::read(repo.join("table.csv")).unwrap(), b"v2\n");
    // A rebase replays a change on top; the working tree follows.
    env.git(&repo, &["checkout", "-q", "-b", "other", "HEAD~1"]);
    assert_eq!(fs::read(repo.join("table.csv")).unwrap(), b"v1\n");
    fs::write(repo.join("readme.txt"), b"hi\n").unwrap();
    env.git(&repo, &["add", "readme.txt"]);
    env.git(&repo, &["commit", "-qm", "readme"]);
    env.git(&repo, &["rebase", "-q", "main"]);
    assert_eq!(fs::read(repo.join("table.csv")).unwrap(), b"v2\n");
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
}

#[test]
fn install_chains_to_an_existing_hook_and_uninstall_restores_it() {
    let env = TestEnv::new();
    let repo = env.temp("r");
    env.git(env.dir.path(), &["init", "-q", "r"]);
    let hook = repo.join(".git/hooks/post-merge");
    fs::write(
        &hook,
        "#!/bin/sh\necho mine > \"$(git rev-parse --git-dir)/ran\"\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&hook)
        .status()
        .unwrap();
    let first = env.czc_at(&repo, &["install", "--local"]);
    assert!(first.contains("post-merge.czc-chained"), "{first}");
    // Idempotent: a second install changes nothing.
    let second = env.czc_at(&repo, &["install", "--local"]);
    assert!(!second.contains("installed hook"), "{second}");
    assert_eq!(
        env.git(&repo, &["config", "--local", "filter.czc.process"])
            .trim(),
        "czc filter-process"
    );
    assert_eq!(
        env.git(&repo, &["config", "--local", "filter.czc.required"])
            .trim(),
        "true"
    );
    // Our hook runs the user's first.
    fs::write(repo.join("x.txt"), "x").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "x"]);
    env.git(&repo, &["checkout", "-q", "-b", "side"]);
    fs::write(repo.join("y.txt"), "y").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "y"]);
    env.git(&repo, &["checkout", "-q", "main"]);
    env.git(&repo, &["merge", "-q", "side"]);
    assert!(repo.join(".git/ran").exists(), "the chained hook ran");
    let ours = fs::read_to_string(&hook).unwrap();
    assert!(ours.contains("czc hook post-merge"));
    env.czc_at(&repo, &["uninstall", "--local"]);
    assert!(fs::read_to_string(&hook).unwrap().contains("echo mine"));
    assert!(!repo.join(".git/hooks/post-merge.czc-chained").exists());
    assert!(!repo.join(".git/hooks/pre-push").exists());
    let out = env.run(
        "git",
        &repo,
        "cache",
        &["config", "--local", "filter.czc.process"],
    );
    assert!(!out.status.success(), "the filter config is gone");
}

#[test]
fn a_pre_push_that_cannot_reach_the_remote_blocks_the_push() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    // An HTTP remote on a closed port.
    env.czc_at(
        &repo,
        &["remote", "add", "team", "http://127.0.0.1:9", "--default"],
    );
    fs::write(repo.join("m.bin"), b"weights").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "m"]);
    let out = env.run("git", &repo, "cache", &["push", "-q", "origin", "main"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("git push was stopped"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
    // Nothing reached origin.
    let refs = env.git(&env.temp("origin.git"), &["for-each-ref"]);
    assert_eq!(refs, "");
}

#[test]
fn filter_process_exits_with_a_message_on_garbage() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    let pkt = |text: &str| format!("{:04x}{text}", text.len() + 4);
    let hello = format!("{}{}0000", pkt("git-filter-client\n"), pkt("version=2\n"));
    let caps = format!("{}0000", pkt("capability=clean\n"));
    let cases = [
        ("this is not a pkt-line".to_string(), "bad packet length"),
        (format!("{}0000", pkt("git-filter-client\n")), "version 2"),
        (
            format!("{}0000", pkt("hello-client\n")),
            "git-filter-client",
        ),
        // git dies in the middle of a file's content.
        (
            format!(
                "{hello}{caps}{}{}0000{}",
                pkt("command=clean\n"),
                pkt("pathname=a.bin\n"),
                "00ffabc"
            ),
            "ended inside",
        ),
    ];
    for (input, expect) in cases {
        let input = input.as_bytes();
        let mut child = env
            .command("czc", &repo, "cache")
            .arg("filter-process")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("czc: error: filter-process"), "{err}");
        assert!(err.contains(expect), "{err}");
    }
}

#[test]
fn fetch_by_revision_ls_and_gc_follow_history() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    let team = env.temp("team");
    let objects = |root: &Path| -> usize { walkdir(root.join("objects")) };
    fs::write(repo.join("new.bin"), b"new content").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "base"]);
    // `old.bin` lives on only in an old commit of another branch.
    env.git(&repo, &["checkout", "-q", "-b", "exp"]);
    fs::write(repo.join("old.bin"), b"old content").unwrap();
    env.git(&repo, &["add", "."]);
    env.git(&repo, &["commit", "-qm", "old"]);
    env.git(&repo, &["rm", "-q", "old.bin"]);
    env.git(&repo, &["commit", "-qm", "drop old"]);
    env.git(&repo, &["checkout", "-q", "main"]);
    env.git(&repo, &["push", "-q", "origin", "main", "exp"]);
    // An object nobody references any more: saved, pushed, then its marker deleted.
    fs::write(repo.join("stray.dat"), b"stray").unwrap();
    env.czc_at(&repo, &["save", "stray.dat"]);
    env.czc_at(&repo, &["push"]);
    fs::remove_file(repo.join("stray.dat.czc")).unwrap();
    assert_eq!(objects(&team), 3);

    // ls shows HEAD's tracked files; --rev another commit's.
    let listed = env.czc_at(&repo, &["ls"]);
    assert!(
        listed.contains("new.bin") && !listed.contains("old.bin"),
        "{listed}"
    );
    assert!(
        listed.contains("filter") && listed.contains("pushed"),
        "{listed}"
    );
    let listed = env.czc_at(&repo, &["ls", "--rev", "exp~1"]);
    assert!(listed.contains("old.bin"), "{listed}");
    let bad = env.run("czc", &repo, "cache", &["ls", "--rev", "no-such-branch"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("no-such-branch"), "{}", stderr(&bad));

    // Fetch by revision into empty caches.
    let out = env.ok("czc", &repo, "cache-c", &["fetch", "--rev", "exp~1"]);
    assert!(out.contains("fetched 2 objects"), "{out}");
    let out = env.ok("czc", &repo, "cache-d", &["fetch", "--branches"]);
    assert!(out.contains("fetched 1 object "), "{out}");
    let out = env.ok("czc", &repo, "cache-e", &["fetch", "--all-commits"]);
    assert!(out.contains("fetched 2 objects"), "{out}");

    // gc: everything is younger than the default grace period of 7 days.
    let out = env.czc_at(&repo, &["gc", "--remote", "team", "--all-commits"]);
    assert!(
        out.contains("deleted 0 objects") && out.contains("1 younger"),
        "{out}"
    );
    // With no grace: the stray object goes, old.bin stays (an old commit needs it).
    let no_grace = ["gc", "--remote", "team", "--keep-younger-than", "0s"];
    let out = env.czc_at(
        &repo,
        &[&no_grace[..], &["--all-commits", "--dry-run"]].concat(),
    );
    assert!(out.contains("would delete 1 object"), "{out}");
    assert_eq!(objects(&team), 3);
    let out = env.czc_at(&repo, &[&no_grace[..], &["--all-commits"]].concat());
    assert!(out.contains("deleted 1 object"), "{out}");
    assert_eq!(objects(&team), 2);
    // Keeping only what branch tips reference, old.bin would go too.
    let out = env.czc_at(&repo, &[&no_grace[..], &["--dry-run"]].concat());
    assert!(out.contains("would delete 1 object"), "{out}");
    assert_eq!(objects(&team), 2);
    // The local cache: the stray object is referenced by no known repository.
    let out = env.czc_at(
        &repo,
        &[
            "gc",
            "--cache",
            "--keep-younger-than",
            "0s",
            "--all-commits",
        ],
    );
    assert!(out.contains("deleted 1 object"), "{out}");
    let bad = env.run(
        "czc",
        &repo,
        "cache",
        &["gc", "--remote", "team", "--keep-younger-than", "soon"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("soon"));
    let bad = env.run("czc", &repo, "cache", &["gc", "--remote", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("nope"));
}

fn walkdir(root: PathBuf) -> usize {
    let mut count = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn ci_pulls_exactly_what_the_commit_references_without_the_filter() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    fs::create_dir_all(repo.join("data")).unwrap();
    fs::write(repo.join("data/a.bin"), b"aaa").unwrap();
    fs::write(repo.join("data/b.bin"), b"bbb").unwrap();
    fs::write(repo.join("table.csv"), b"x,y\n").unwrap();
    env.czc_at(&repo, &["save", "table.csv"]);
    env.git(&repo, &["add", "-A"]);
    env.git(&repo, &["commit", "-qm", "data"]);
    env.git(&repo, &["push", "-q", "origin", "main"]);
    // CI: no `czc install`, so git leaves marker text in the filtered files.
    let ci_home = env.temp("ci-home");
    fs::create_dir_all(&ci_home).unwrap();
    let clone = env.temp("ci");
    let git_ci = |dir: &Path, args: &[&str]| {
        let out = env
            .command("git", dir, "ci-cache")
            .env("HOME", &ci_home)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    git_ci(env.dir.path(), &["clone", "-q", "origin.git", "ci"]);
    let pointer = fs::read_to_string(clone.join("data/a.bin")).unwrap();
    assert!(pointer.starts_with("version = \"czc/1\""));
    // Part of the repo first, by pattern.
    let czc_ci = |args: &[&str]| {
        env.command("czc", &clone, "ci-cache")
            .env("HOME", &ci_home)
            .args(args)
            .output()
            .unwrap()
    };
    let out = czc_ci(&["pull", "data/a*.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(clone.join("data/a.bin")).unwrap(), b"aaa");
    assert!(fs::read_to_string(clone.join("data/b.bin"))
        .unwrap()
        .starts_with("version"));
    assert!(!clone.join("table.csv").exists());
    // Then everything.
    let out = czc_ci(&["pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(clone.join("data/b.bin")).unwrap(), b"bbb");
    assert_eq!(fs::read(clone.join("table.csv")).unwrap(), b"x,y\n");
    // Something missing everywhere: non-zero, named.
    fs::remove_dir_all(env.temp("team")).unwrap();
    fs::remove_dir_all(env.temp("ci-cache")).unwrap();
    fs::remove_file(clone.join("table.csv")).unwrap();
    let out = czc_ci(&["pull"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("table.csv"), "{}", stderr(&out));
}

#[test]
fn a_two_gib_file_streams_through_clean_and_smudge_in_flat_memory() {
    let env = TestEnv::new();
    let repo = env.repo("a");
    const SIZE: u64 = 2 << 30;
    let pattern: Vec<u8> = random_bytes(5, 1 << 20);
    // Heap, not page cache: hashing maps the object, and mapped file pages are not ours.
    let peak_rss = |pid: u32| -> u64 {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("RssAnon:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    // Clean: 2 GiB in, marker out.
    let mut child = env.spawn_piped("czc", &repo, &["clean", "big.bin"]);
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut peak = 0;
    for _ in 0..SIZE / pattern.len() as u64 {
        stdin.write_all(&pattern).unwrap();
        peak = peak.max(peak_rss(pid));
    }
    drop(stdin);
    let mut marker = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut marker)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(String::from_utf8_lossy(&marker).contains(&format!("size = {SIZE}")));
    assert!(peak < 200 * 1024, "clean peaked at {peak} KiB");
    // Smudge: marker in, 2 GiB out, checked as it streams.
    let mut child = env.spawn_piped("czc", &repo, &["smudge", "big.bin"]);
    let pid = child.id();
    child.stdin.take().unwrap().write_all(&marker).unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; pattern.len()];
    let mut total = 0u64;
    let mut peak = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = out.read(&mut buf[filled..]).unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        assert_eq!(&buf[..filled], &pattern[..filled], "at byte {total}");
        total += filled as u64;
        peak = peak.max(peak_rss(pid));
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(total, SIZE);
    assert!(peak < 200 * 1024, "smudge peaked at {peak} KiB");
}

#[test]
fn a_plain_clone_gets_the_hooks_from_the_filter_and_status_and_push_see_filtered_files() {
    let env = TestEnv::new();
    let repo = env.repo("repo");
    fs::write(repo.join("first.bin"), random_bytes(91, 40_000)).unwrap();
    env.git(&repo, &["add", "-A"]);
    env.git(&repo, &["commit", "-qm", "first"]);
    env.git(&repo, &["push", "-q", "origin", "main"]);
    let team = env.temp("team");
    let objects = |dir: &Path| {
        walkdir::WalkDir::new(dir.join("objects"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count()
    };
    assert_eq!(objects(&team), 1, "the repo's own pre-push uploaded");
    // A teammate: the filter is in the user's git config (czc install once), but a
    // plain clone has no hooks. The filter process running at checkout installs them.
    let clone = env.temp("clone");
    let origin = env.temp("origin.git");
    env.ok(
        "git",
        env.dir.path(),
        "cache-b",
        &["clone", "-q", origin.to_str().unwrap(), "clone"],
    );
    let hook = fs::read_to_string(clone.join(".git/hooks/pre-push")).unwrap();
    assert!(hook.contains("czc"), "{hook}");
    fs::write(clone.join("second.bin"), random_bytes(92, 30_000)).unwrap();
    env.ok("git", &clone, "cache-b", &["add", "second.bin"]);
    env.ok("git", &clone, "cache-b", &["commit", "-qm", "second"]);
    let status = env.ok("czc", &clone, "cache-b", &["status"]);
    assert!(status.contains("ok          first.bin"), "{status}");
    assert!(status.contains("ok          second.bin"), "{status}");
    env.ok("git", &clone, "cache-b", &["push", "-q", "origin", "main"]);
    assert_eq!(
        objects(&team),
        2,
        "git push in the clone uploaded the new file"
    );
    let pushed = env.ok("czc", &clone, "cache-b", &["push"]);
    assert!(
        pushed.contains("pushed 0 objects") && pushed.contains("2 already there"),
        "{pushed}"
    );
}

#[test]
fn status_and_push_see_filtered_files_that_are_only_staged() {
    let env = TestEnv::new();
    let repo = env.repo("repo");
    fs::write(repo.join("first.bin"), random_bytes(97, 20_000)).unwrap();
    env.git(&repo, &["add", "-A"]);
    env.git(&repo, &["commit", "-qm", "first"]);
    // Staged, not committed: the index holds its marker, HEAD does not.
    fs::write(repo.join("staged.bin"), random_bytes(98, 25_000)).unwrap();
    env.git(&repo, &["add", "staged.bin"]);
    // A staged new version of a committed file: one line for it, the staged marker.
    fs::write(repo.join("first.bin"), random_bytes(99, 20_000)).unwrap();
    env.git(&repo, &["add", "first.bin"]);
    let status = env.czc_at(&repo, &["status"]);
    assert!(status.contains("ok          staged.bin"), "{status}");
    assert_eq!(
        status.matches("first.bin").count(),
        1,
        "one line per file: {status}"
    );
    assert!(status.contains("ok          first.bin"), "{status}");
    // `czc push` with no paths uploads what the index and HEAD reference: the old
    // and new first.bin and staged.bin.
    let pushed = env.czc_at(&repo, &["push"]);
    assert!(pushed.contains("pushed 3 objects"), "{pushed}");
    let team = env.temp("team");
    for seed in [97, 98, 99] {
        let len = if seed == 98 { 25_000 } else { 20_000 };
        let oid = czcache::oid::Oid::of_bytes(&random_bytes(seed, len)).hex();
        assert!(
            team.join("objects")
                .join(&oid[..2])
                .join(&oid[2..])
                .is_file(),
            "object of seed {seed} pushed"
        );
    }
}

#[test]
fn gc_remote_never_deletes_what_another_clone_just_pushed() {
    let env = TestEnv::new();
    let a = env.repo("a");
    fs::write(a.join("data.dat"), random_bytes(95, 20_000)).unwrap();
    env.czc_at(&a, &["save", "data.dat"]);
    env.git(&a, &["add", "-A"]);
    env.git(&a, &["commit", "-qm", "add data"]);
    env.git(&a, &["push", "-q", "origin", "main"]);
    let team = env.temp("team");
    let oid = {
        let text = fs::read_to_string(a.join("data.dat.czc")).unwrap();
        text.lines()
            .find(|l| l.starts_with("oid = "))
            .unwrap()
            .trim_start_matches("oid = \"blake3:")
            .trim_end_matches('"')
            .to_string()
    };
    let object = team.join("objects").join(&oid[..2]).join(&oid[2..]);
    assert!(object.is_file());
    // B clones, A drops the marker (and pushes that), B saves the same bytes again and
    // pushes its commit: "already there".
    let b = env.temp("b");
    let origin = env.temp("origin.git");
    env.ok(
        "git",
        env.dir.path(),
        "cache-b",
        &["clone", "-q", origin.to_str().unwrap(), "b"],
    );
    env.git(&a, &["rm", "-q", "data.dat.czc"]);
    env.git(&a, &["commit", "-qm", "drop data"]);
    env.git(&a, &["push", "-q", "origin", "main"]);
    env.ok(
        "git",
        &b,
        "cache-b",
        &["pull", "-q", "--no-rebase", "origin", "main"],
    );
    fs::write(b.join("again.dat"), random_bytes(95, 20_000)).unwrap();
    env.ok("czc", &b, "cache-b", &["save", "again.dat"]);
    let pushed = env.ok("czc", &b, "cache-b", &["push"]);
    assert!(pushed.contains("1 already there"), "{pushed}");
    env.ok("git", &b, "cache-b", &["add", "-A"]);
    env.ok("git", &b, "cache-b", &["commit", "-qm", "data again"]);
    env.ok("git", &b, "cache-b", &["push", "-q", "origin", "main"]);
    // A has not fetched B's commit: its gc refuses, naming what to do.
    let out = env.run(
        "czc",
        &a,
        "cache",
        &["gc", "--remote", "team", "--keep-younger-than", "0s"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("git fetch origin"),
        "{}",
        stderr(&out)
    );
    assert!(object.is_file());
    // Fetched, gc keeps what origin/main references.
    env.git(&a, &["fetch", "-q", "origin"]);
    let out = env.czc_at(&a, &["gc", "--remote", "team", "--keep-younger-than", "0s"]);
    assert!(out.contains("deleted 0 objects"), "{out}");
    assert!(object.is_file());
    // And a fresh clone can pull it.
    let c = env.temp("c");
    env.ok(
        "git",
        env.dir.path(),
        "cache-c",
        &["clone", "-q", origin.to_str().unwrap(), "c"],
    );
    env.ok("czc", &c, "cache-c", &["pull"]);
    assert_eq!(
        fs::read(c.join("again.dat")).unwrap(),
        random_bytes(95, 20_000)
    );
}
