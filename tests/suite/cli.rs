//! End-to-end tests of the `czc` binary on real files, real git and a real cache folder.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{bytes, fixtures, mode, snapshot, stderr, stdout, TestEnv};
use predicates::prelude::*;

fn save_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.czc().arg("save").args(args).output().unwrap();
    assert!(out.status.success(), "save failed: {}", stderr(&out));
    stdout(&out)
}

// ---- save and markers ----

#[test]
fn save_prints_writes_canonical_marker_and_gitignore() {
    let env = TestEnv::new();
    env.write("data/big.h5ad", bytes(1, 5000));
    let printed = save_ok(&env, &["data/big.h5ad"]);
    let oid = env.marker_oid("data/big.h5ad.czc");
    assert_eq!(printed, format!("saved data/big.h5ad {oid} 5000\n"));
    assert_eq!(
        fs::read_to_string(env.path("data/big.h5ad.czc")).unwrap(),
        format!("version = \"czc/1\"\noid = \"{oid}\"\nsize = 5000\n")
    );
    assert_eq!(
        fs::read_to_string(env.path("data/.gitignore")).unwrap(),
        "/big.h5ad\n"
    );
    // The object is in the cache, read-only, with the same bytes.
    let object = env.object(&oid);
    assert_eq!(fs::read(&object).unwrap(), bytes(1, 5000));
    assert_eq!(mode(&object), 0o444);
}

#[test]
fn resave_of_unchanged_content_is_byte_identical() {
    let env = TestEnv::new();
    env.write("a.bin", bytes(2, 300));
    save_ok(&env, &["a.bin"]);
    let first = env.read("a.bin.czc");
    let ignore = env.read(".gitignore");
    save_ok(&env, &["a.bin"]);
    assert_eq!(env.read("a.bin.czc"), first);
    assert_eq!(env.read(".gitignore"), ignore, "gitignore entry added once");
    // Saving through the marker's name works the same.
    save_ok(&env, &["a.bin.czc"]);
    assert_eq!(env.read("a.bin.czc"), first);
}

#[test]
fn save_of_a_missing_path_names_it() {
    let env = TestEnv::new();
    env.czc()
        .args(["save", "nope.bin"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::starts_with("czc: error:").and(predicate::str::contains("nope.bin")),
        );
    assert!(!env.path("nope.bin.czc").exists());
}

#[test]
fn folder_with_nested_dirs_empty_file_and_executable_round_trips() {
    let env = TestEnv::new();
    env.write("ds/a.txt", "alpha\n");
    env.write("ds/empty", "");
    env.write("ds/deep/er/b.bin", bytes(3, 70_000));
    let run = env.write("ds/bin/run.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    let printed = save_ok(&env, &["ds"]);
    assert!(printed.starts_with("saved ds blake3:"), "{printed}");
    let marker = fs::read_to_string(env.path("ds.czc")).unwrap();
    assert!(marker.ends_with("kind = \"dir\"\nfiles = 4\n"), "{marker}");
    assert!(marker.contains(&format!("size = {}\n", 6 + 70_000 + 18)));

    fs::remove_dir_all(env.path("ds")).unwrap();
    env.czc().arg("checkout").assert().success();
    assert_eq!(env.read("ds/a.txt"), b"alpha\n");
    assert_eq!(env.read("ds/empty"), b"");
    assert_eq!(env.read("ds/deep/er/b.bin"), bytes(3, 70_000));
    assert_eq!(mode(&env.path("ds/a.txt")), 0o444);
    assert_eq!(mode(&env.path("ds/empty")), 0o444);
    assert_eq!(mode(&env.path("ds/bin/run.sh")), 0o555);
    env.czc()
        .arg("status")
        .assert()
        .success()
        .stdout("ok          ds/ (4 files)\n");
}

#[test]
fn status_reports_every_state() {
    let env = TestEnv::new();
    env.write("ok.bin", "same");
    env.write("mod.bin", "before");
    env.write("gone.bin", "gone");
    save_ok(&env, &["ok.bin", "mod.bin", "gone.bin"]);
    fs::remove_file(env.path("gone.bin")).unwrap();
    env.write("mod.bin", "after!");
    env.czc()
        .arg("status")
        .assert()
        .success()
        .stdout("missing     gone.bin\nmodified    mod.bin\nok          ok.bin\n");
    // -q shows only problems; --json is machine-readable.
    env.czc()
        .args(["-q", "status"])
        .assert()
        .stdout("missing     gone.bin\nmodified    mod.bin\n");
    let out = env
        .czc()
        .args(["--json", "status", "ok.bin"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["version"], 1,
        "every document names its schema version"
    );
    assert_eq!(json["files"][0]["state"], "ok");
    // With the cache cleared, a missing file cannot be restored: not-cached. A file
    // that still matches its marker stays ok.
    env.czc().args(["cache", "clear"]).assert().success();
    env.czc()
        .args(["status", "gone.bin", "ok.bin"])
        .assert()
        .stdout("not-cached  gone.bin\nok          ok.bin\n");
}

#[test]
fn folder_status_counts_files_inside() {
    let env = TestEnv::new();
    for i in 0..5 {
        env.write(&format!("set/f{i}"), format!("file {i}"));
    }
    save_ok(&env, &["set"]);
    fs::remove_file(env.path("set/f0")).unwrap();
    env.write("set/f1", "changed");
    env.write("set/new", "added");
    env.czc()
        .arg("status")
        .assert()
        .stdout("modified    set/ (1 modified, 1 missing, 1 added of 5 files)\n");
}

// ---- checkout, open, cat, unprotect ----

#[test]
fn checkout_refuses_to_clobber_a_modified_file_but_restores_the_rest() {
    let env = TestEnv::new();
    env.write("a.bin", "a-saved");
    env.write("b.bin", "b-saved");
    save_ok(&env, &["a.bin", "b.bin"]);
    env.write("a.bin", "a-edited-not-saved");
    fs::remove_file(env.path("b.bin")).unwrap();
    env.czc()
        .arg("checkout")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "czc: error: a.bin has changes that are not saved",
        ));
    assert_eq!(env.read("a.bin"), b"a-edited-not-saved");
    assert_eq!(env.read("b.bin"), b"b-saved");
    env.czc()
        .args(["checkout", "--force", "a.bin"])
        .assert()
        .success();
    assert_eq!(env.read("a.bin"), b"a-saved");
}

#[test]
fn checkout_restores_good_markers_and_names_each_bad_one() {
    let env = TestEnv::new();
    env.write("good.bin", "good");
    env.write("lost.bin", "lost");
    save_ok(&env, &["good.bin", "lost.bin"]);
    fs::remove_file(env.path("good.bin")).unwrap();
    fs::remove_file(env.path("lost.bin")).unwrap();
    // lost.bin's object is gone from the cache; bad.czc is not a marker at all.
    fs::remove_file(env.object(&env.marker_oid("lost.bin.czc"))).unwrap();
    fs::copy(
        fixtures().join("bad-markers/unknown-key.czc"),
        env.path("bad.czc"),
    )
    .unwrap();
    let out = env.czc().arg("checkout").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("czc: error: marker bad.czc: unknown key 'color'"),
        "{err}"
    );
    assert!(
        lines[1].contains("for lost.bin ") && lines[1].contains("not in the local cache"),
        "{err}"
    );
    assert_eq!(env.read("good.bin"), b"good");
    assert!(!env.path("lost.bin").exists());
}

#[test]
fn checkout_skips_matching_files_and_replaces_cached_old_versions() {
    let env = TestEnv::new();
    env.write("m.bin", "version one");
    save_ok(&env, &["m.bin"]);
    let v1 = env.read("m.bin.czc");
    env.write("m.bin", "version two");
    save_ok(&env, &["m.bin"]);
    env.czc()
        .arg("checkout")
        .assert()
        .success()
        .stdout("restored 0 files, 1 already up to date\n");
    // Switching the marker back (as a git checkout would) restores v1 without --force:
    // the file on disk is v2, which the cache holds, so nothing is lost.
    fs::write(env.path("m.bin.czc"), v1).unwrap();
    env.czc().arg("checkout").assert().success();
    assert_eq!(env.read("m.bin"), b"version one");
    assert_eq!(mode(&env.path("m.bin")), 0o444);
}

#[test]
fn checkout_copies_when_reflink_is_unsupported() {
    let env = TestEnv::new();
    env.write("r.bin", bytes(4, 2_000_000));
    save_ok(&env, &["r.bin"]);
    fs::remove_file(env.path("r.bin")).unwrap();
    // Default link order is reflink then copy; this ext4/tmpfs disk has no reflinks.
    env.czc()
        .args(["-v", "checkout"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 by copy"));
    let object = env.object(&env.marker_oid("r.bin.czc"));
    assert_ne!(
        fs::metadata(env.path("r.bin")).unwrap().ino(),
        fs::metadata(object).unwrap().ino()
    );
    assert_eq!(env.read("r.bin"), bytes(4, 2_000_000));
}

#[test]
fn hardlink_is_opt_in_and_falls_back_to_copy_across_filesystems() {
    // Same filesystem: a hard link to the object.
    let env = TestEnv::new().with_env("CZC_CACHE_LINK", "hardlink,copy");
    env.write("h.bin", "linked");
    save_ok(&env, &["h.bin"]);
    fs::remove_file(env.path("h.bin")).unwrap();
    env.czc()
        .args(["-v", "checkout"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 by hardlink"));
    let object = env.object(&env.marker_oid("h.bin.czc"));
    assert_eq!(
        fs::metadata(env.path("h.bin")).unwrap().ino(),
        fs::metadata(&object).unwrap().ino()
    );

    // Cache on tmpfs, project on disk: link(2) fails with EXDEV, copy takes over.
    let shm = Path::new("/dev/shm");
    assert_ne!(
        fs::metadata(shm).unwrap().dev(),
        fs::metadata(&env.project).unwrap().dev(),
        "the test needs /dev/shm on another filesystem"
    );
    let cross_cache = tempfile::tempdir_in(shm).unwrap();
    let cross = TestEnv::new()
        .with_env("CZC_CACHE_LINK", "hardlink,copy")
        .with_env("CZC_CACHE_DIR", cross_cache.path().display().to_string());
    cross.write("x.bin", bytes(5, 10_000));
    save_ok(&cross, &["x.bin"]);
    fs::remove_file(cross.path("x.bin")).unwrap();
    cross
        .czc()
        .args(["-v", "checkout"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 by copy"));
    assert_eq!(cross.read("x.bin"), bytes(5, 10_000));
    assert_eq!(mode(&cross.path("x.bin")), 0o444);
    // Hardlink alone with no fallback fails clearly.
    fs::remove_file(cross.path("x.bin")).unwrap();
    cross
        .czc()
        .env("CZC_CACHE_LINK", "hardlink")
        .arg("checkout")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cache.link"));
}

#[test]
fn open_cat_and_open_to() {
    let env = TestEnv::new();
    let data = bytes(6, 40_000);
    env.write("o.bin", &data);
    save_ok(&env, &["o.bin"]);
    let oid = env.marker_oid("o.bin.czc");
    for target in ["o.bin", "o.bin.czc", oid.as_str()] {
        let out = env.czc().args(["open", target]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let path = stdout(&out).trim().to_string();
        assert_eq!(fs::read(&path).unwrap(), data);
        assert_eq!(mode(Path::new(&path)), 0o444);
        let out = env.czc().args(["cat", target]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
    env.czc()
        .args(["open", "o.bin", "--to", "copies/o.copy"])
        .assert()
        .success();
    assert_eq!(env.read("copies/o.copy"), data);
    assert_eq!(mode(&env.path("copies/o.copy")), 0o444);
    env.czc()
        .args(["cat", "blake3:abc"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("blake3:abc"));
}

#[test]
fn unprotect_gives_a_private_writable_copy() {
    let env = TestEnv::new();
    env.write("u.bin", "original");
    save_ok(&env, &["u.bin"]);
    let object = env.object(&env.marker_oid("u.bin.czc"));
    fs::remove_file(env.path("u.bin")).unwrap();
    env.czc()
        .env("CZC_CACHE_LINK", "hardlink,copy")
        .arg("checkout")
        .assert()
        .success();
    env.czc().args(["unprotect", "u.bin"]).assert().success();
    assert_eq!(mode(&env.path("u.bin")), 0o644);
    fs::write(env.path("u.bin"), "edited").unwrap();
    assert_eq!(
        fs::read(&object).unwrap(),
        b"original",
        "the cache is untouched"
    );
    env.czc()
        .arg("status")
        .assert()
        .stdout("modified    u.bin\n");
}

// ---- the cache ----

#[test]
fn lru_eviction_keeps_recently_used_objects() {
    let env = TestEnv::new().with_env("CZC_CACHE_SIZE_LIMIT", "350");
    let team = env.dir.path().join("team");
    env.write(
        ".czcache.toml",
        format!(
            "[remote]\ndefault = \"team\"\n[remotes.team]\nurl = \"{}\"\n",
            team.display()
        ),
    );
    for name in ["a", "b", "c"] {
        env.write(name, bytes(name.as_bytes()[0] as u64, 100));
        save_ok(&env, &[name]);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Only objects a remote holds are fair game for LRU.
    env.czc().arg("push").assert().success();
    // Use `a`, so `b` is now the least recently used.
    env.czc().args(["cat", "a"]).assert().success();
    std::thread::sleep(Duration::from_millis(5));
    env.write("d", bytes(100, 100));
    save_ok(&env, &["d"]);
    let present = |name: &str| env.object(&env.marker_oid(&format!("{name}.czc"))).exists();
    assert!(present("a") && present("c") && present("d"));
    assert!(!present("b"), "b was least recently used");
    env.czc().args(["--json", "cache", "info"]).assert().stdout(
        predicate::str::contains("\"objects\": 3").and(predicate::str::contains("\"size\": 300")),
    );
    // Explicit eviction to a size.
    env.czc()
        .args(["cache", "evict", "--to", "150"])
        .assert()
        .success();
    assert!(present("d") && !present("a") && !present("c"));
}

#[test]
fn a_file_larger_than_the_cache_is_refused_and_nothing_is_written() {
    let env = TestEnv::new().with_env("CZC_CACHE_SIZE_LIMIT", "1KiB");
    env.write("huge.bin", bytes(7, 4096));
    env.czc()
        .args(["save", "huge.bin"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("huge.bin is 4096 bytes")
                .and(predicate::str::contains("1024"))
                .and(predicate::str::contains("cache.size_limit")),
        );
    assert!(!env.path("huge.bin.czc").exists());
    assert!(env.cached_objects().is_empty());
    let leftovers = walk_files(&env.cache.join("tmp"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn two_projects_share_one_cache() {
    let env = TestEnv::new();
    env.write("shared.bin", bytes(8, 9000));
    save_ok(&env, &["shared.bin"]);
    let other = env.dir.path().join("other");
    env.git_init(&other);
    fs::copy(env.path("shared.bin.czc"), other.join("shared.bin.czc")).unwrap();
    env.czc_in(&other).arg("checkout").assert().success();
    assert_eq!(fs::read(other.join("shared.bin")).unwrap(), bytes(8, 9000));
    // The same content saved in the second project is the same single object.
    fs::write(other.join("again.bin"), bytes(8, 9000)).unwrap();
    env.czc_in(&other)
        .args(["save", "again.bin"])
        .assert()
        .success();
    assert_eq!(env.cached_objects().len(), 1);
}

#[test]
fn four_processes_save_into_one_cache_at_once() {
    let env = TestEnv::new();
    for p in 0..4 {
        for f in 0..20 {
            // Files 0..10 are the same in every process: they race on one object.
            let seed = if f < 10 { f } else { 100 * (p + 1) + f };
            env.write(&format!("p{p}/f{f}"), bytes(seed, 30_000 + f as usize));
        }
        env.write(&format!("p{p}/big"), bytes(999, 3_000_000));
    }
    let children: Vec<_> = (0..4)
        .map(|p| {
            env.czc_std()
                .args(["save", &format!("p{p}"), &format!("p{p}/big")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // 10 shared + 4*10 own files + 1 shared big file + 4 manifests.
    assert_eq!(env.cached_objects().len(), 10 + 40 + 1 + 4);
    env.czc()
        .args(["cache", "verify"])
        .assert()
        .success()
        .stdout("checked 55 objects: 0 corrupt, index +0 -0\n");
}

#[test]
fn a_save_killed_mid_file_leaves_no_object_and_no_marker() {
    let env = TestEnv::new();
    let size = 400 << 20;
    let data = bytes(11, 1 << 20);
    let mut file = fs::File::create(env.path("huge.bin")).unwrap();
    for _ in 0..(size >> 20) {
        std::io::Write::write_all(&mut file, &data).unwrap();
    }
    drop(file);
    let mut child = env
        .czc_std()
        .args(["save", "huge.bin"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the copy into staging has started, then kill mid-file.
    let start = Instant::now();
    let mut killed_mid_copy = false;
    while start.elapsed() < Duration::from_secs(30) {
        let staged: u64 = walk_files(&env.cache.join("tmp"))
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if staged > 0 && staged < size {
            child.kill().unwrap();
            killed_mid_copy = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait().unwrap();
    assert!(killed_mid_copy, "did not catch the save mid-file");
    assert!(env.cached_objects().is_empty());
    assert!(!env.path("huge.bin.czc").exists());
    // The next save works and sweeps the dead process's staging.
    env.write("small.bin", "after the crash");
    save_ok(&env, &["small.bin"]);
    assert!(walk_files(&env.cache.join("tmp")).is_empty());
    env.czc().args(["cache", "verify"]).assert().success();
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk_files(&entry.path()));
            } else if entry.path().extension().is_none_or(|e| e != "lock") {
                out.push(entry.path());
            }
        }
    }
    out
}

#[test]
fn a_corrupt_object_is_never_served_and_verify_quarantines_it() {
    let env = TestEnv::new();
    env.write("c.bin", bytes(12, 5000));
    env.write("d.bin", bytes(13, 5000));
    save_ok(&env, &["c.bin", "d.bin"]);
    let corrupt_one = |name: &str| {
        let object = env.object(&env.marker_oid(&format!("{name}.czc")));
        fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).unwrap();
        let mut content = fs::read(&object).unwrap();
        content[100] ^= 0x01;
        fs::write(&object, content).unwrap();
        object
    };
    corrupt_one("c.bin");
    // cat refuses before sending a byte, and quarantines the object.
    let out = env.czc().args(["cat", "c.bin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    // checkout does not place those bytes either.
    fs::remove_file(env.path("c.bin")).unwrap();
    env.czc().args(["checkout", "c.bin"]).assert().code(1);
    assert!(!env.path("c.bin").exists());

    // verify finds a corrupt object nobody has read yet.
    let object = corrupt_one("d.bin");
    env.czc()
        .args(["cache", "verify"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("corrupt"));
    assert!(!object.exists());
    let hex = env.marker_oid("d.bin.czc")["blake3:".len()..].to_string();
    assert!(env.cache.join("quarantine").join(hex).exists());
    env.czc().args(["cache", "verify"]).assert().success();
    fs::remove_file(env.path("d.bin")).unwrap();
    env.czc()
        .args(["status", "d.bin"])
        .assert()
        .stdout("not-cached  d.bin\n");
}

#[test]
fn every_index_backend_drives_the_same_workflow() {
    for (kind, file) in [
        ("csv", "index.csv"),
        ("json", "index.json"),
        ("sqlite", "index.sqlite"),
    ] {
        let env = TestEnv::new().with_env("CZC_CACHE_INDEX", kind);
        env.write("x/1", "one");
        env.write("x/2", "two");
        save_ok(&env, &["x"]);
        fs::remove_dir_all(env.path("x")).unwrap();
        env.czc().arg("checkout").assert().success();
        env.czc().args(["cat", "x/1"]).assert().code(1); // a file inside a folder marker is not a marker
        assert!(env.cache.join(file).exists(), "{kind}");
        let out = env
            .czc()
            .args(["--json", "cache", "info"])
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["index"], kind);
        assert_eq!(info["objects"], 3, "{kind}");
        assert!(info["hits"].as_u64().unwrap() >= 3, "{kind}: {info}");
    }
}

#[test]
fn index_and_disk_disagreeing_is_repaired_by_verify() {
    let env = TestEnv::new().with_env("CZC_CACHE_INDEX", "csv");
    env.write("k.bin", "keep");
    env.write("g.bin", "gone");
    save_ok(&env, &["k.bin", "g.bin"]);
    // A hand-deleted object: no command trusts its index entry.
    fs::remove_file(env.object(&env.marker_oid("g.bin.czc"))).unwrap();
    fs::remove_file(env.path("g.bin")).unwrap();
    env.czc()
        .args(["status", "g.bin"])
        .assert()
        .stdout("not-cached  g.bin\n");
    env.czc()
        .args(["--json", "cache", "info"])
        .assert()
        .stdout(predicate::str::contains("\"objects\": 1"));
    // A corrupt index file: verify rebuilds it from the objects.
    fs::write(env.cache.join("index.csv"), "\u{0}garbage,\"\n").unwrap();
    env.czc()
        .args(["cache", "verify"])
        .assert()
        .success()
        .stdout("checked 1 objects: 0 corrupt, index +1 -0 (rebuilt)\n");
    let index = fs::read_to_string(env.cache.join("index.csv")).unwrap();
    assert!(index.contains(&env.marker_oid("k.bin.czc")), "{index}");
}

// ---- bad input ----

#[test]
fn every_bad_marker_fails_cleanly_and_changes_nothing() {
    let dir = fixtures().join("bad-markers");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".czc"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        let env = TestEnv::new();
        if name == "manifest-traversal.czc" {
            // Put the evil manifest into the cache, as a colleague's cache could hold it.
            let staging = env.dir.path().join("staging");
            fs::create_dir_all(&staging).unwrap();
            fs::copy(
                dir.join("manifest-traversal.manifest.json"),
                staging.join("m"),
            )
            .unwrap();
            env.czc_in(&staging).args(["save", "m"]).assert().success();
        }
        fs::copy(dir.join(&name), env.path(&name)).unwrap();
        let before = snapshot(&env.project);
        let objects_before = env.cached_objects();
        for args in [
            vec!["checkout"],
            vec!["checkout", name.as_str()],
            vec!["status"],
            vec!["open", name.as_str()],
            vec!["cat", name.as_str()],
            vec!["open", name.as_str(), "--to", "out"],
        ] {
            let out = env.czc().args(&args).output().unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {err}");
            assert!(err.starts_with("czc: error: "), "{name} {args:?}: {err}");
            assert!(err.contains(&name), "{name} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{name} {args:?}: {err}");
            assert_eq!(
                snapshot(&env.project),
                before,
                "{name} {args:?} changed files"
            );
        }
        assert_eq!(env.cached_objects(), objects_before);
        assert!(!env.dir.path().join("escaped.txt").exists());
    }
}

#[test]
fn bad_usage_exits_2_and_bad_config_names_the_key() {
    let env = TestEnv::new();
    env.czc().arg("save").assert().code(2);
    env.czc().args(["frobnicate"]).assert().code(2);
    env.czc().args(["status", "--bogus"]).assert().code(2);
    env.write(".czcache.toml", "[cache]\nsize_limt = \"1GiB\"\n");
    env.czc().arg("status").assert().code(1).stderr(
        predicate::str::contains(".czcache.toml line 2").and(predicate::str::contains("size_limt")),
    );
    env.write(".czcache.toml", "[cache]\nindex = \"xml\"\n");
    env.czc()
        .arg("status")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("xml"));
    fs::remove_file(env.path(".czcache.toml")).unwrap();
    env.czc()
        .env("CZC_CACHE_SIZE_LIMIT", "huge")
        .arg("status")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("CZC_CACHE_SIZE_LIMIT").and(predicate::str::contains("huge")),
        );
    env.czc()
        .args(["cache", "evict", "--to", "lots"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("lots"));
}

#[test]
fn init_is_idempotent_and_dash_c_changes_folder() {
    let env = TestEnv::new();
    env.czc()
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("initialized"));
    let text = env.read(".czcache.toml");
    env.czc()
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("already initialized"));
    assert_eq!(env.read(".czcache.toml"), text);
    env.write("sub/f.bin", "in a subfolder");
    env.czc_in(env.dir.path())
        .args(["-C", "project/sub", "save", "f.bin"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("saved f.bin blake3:"));
    assert!(env.path("sub/f.bin.czc").exists());
}

#[test]
fn cat_into_a_closed_pipe_is_not_an_error() {
    let env = TestEnv::new();
    env.write("p.bin", bytes(14, 8 << 20));
    save_ok(&env, &["p.bin"]);
    let mut child = env
        .czc_std()
        .args(["cat", "p.bin"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(head, bytes(14, 10)[..]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty());
}

#[test]
fn json_output_of_save_and_checkout() {
    let env = TestEnv::new();
    env.write("j.bin", "json");
    let out = env
        .czc()
        .args(["--json", "save", "j.bin"])
        .output()
        .unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["saved"][0]["size"], 4);
    assert_eq!(
        saved["saved"][0]["oid"].as_str().unwrap(),
        env.marker_oid("j.bin.czc")
    );
    fs::remove_file(env.path("j.bin")).unwrap();
    let out = env.czc().args(["--json", "checkout"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["restored"], 1);
}

#[test]
fn every_json_document_is_an_object_naming_its_version() {
    let env = TestEnv::new();
    let remote = env.dir.path().join("remote");
    env.write("v.bin", "versioned");
    let documents: Vec<Vec<&str>> = vec![
        vec!["init"],
        vec!["save", "v.bin"],
        vec!["status"],
        vec![
            "remote",
            "add",
            "team",
            remote.to_str().unwrap(),
            "--default",
        ],
        vec!["remote", "list"],
        vec!["push"],
        vec!["put", "team:keys/k", "v.bin"],
        vec!["get", "team:keys/k"],
        vec!["rm", "team:keys/k"],
        vec!["cache", "info"],
        vec!["remote", "remove", "team"],
        vec!["cat", "missing.bin"],
    ];
    for args in documents {
        let out = env.czc().arg("--json").args(&args).output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!("{args:?}: {err}: {}", String::from_utf8_lossy(&out.stdout))
        });
        assert!(json.is_object(), "{args:?}: {json}");
        assert_eq!(json["version"], 1, "{args:?}: {json}");
    }
}

#[test]
fn arguments_that_do_not_go_together_exit_2() {
    let env = TestEnv::new();
    env.czc()
        .args(["fetch", "data", "--rev", "HEAD"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not both"));
    // clap's own usage errors exit 2 as well.
    env.czc().args(["save"]).assert().code(2);
}
