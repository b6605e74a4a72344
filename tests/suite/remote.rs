//! Remotes end to end with folder remotes: push from one project, pull into another with
//! an empty cache through a chain, corrupt and unreachable remotes, remote editing.

use std::fs;
use std::path::Path;

use crate::util::{bytes, stderr, TestEnv};
use predicates::prelude::*;

fn project_config(env: &TestEnv, text: &str) {
    env.write(".czcache.toml", text);
}

fn team_setup() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new();
    let team = env.dir.path().join("team");
    project_config(
        &env,
        &format!(
            "[remote]\ndefault = \"team\"\n\n[remotes.team]\nurl = \"{}\"\n",
            team.display()
        ),
    );
    env.write("data/model.bin", bytes(1, 300_000));
    env.write("data/set/a.txt", "alpha");
    env.write("data/set/b/c.bin", bytes(2, 5000));
    env.czc()
        .args(["save", "data/model.bin", "data/set"])
        .assert()
        .success();
    (env, team)
}

/// A second clone of the project: same markers, its own empty cache.
fn clone_of(env: &TestEnv, config: &str) -> TestEnv {
    let other = TestEnv::new();
    project_config(&other, config);
    for marker in ["data/model.bin.czc", "data/set.czc"] {
        other.write(marker, env.read(marker));
    }
    other
}

#[test]
fn the_remote_round_trip_passes_over_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[remote]\ndefault = \"team\"\n\n[remotes.team]\nurl = \"{}\"\n",
        dir.path().join("team").display()
    );
    crate::util::remote_round_trip(&config, &|env| env);
}

#[test]
fn push_then_pull_into_an_empty_cache_through_a_chain() {
    let (env, team) = team_setup();
    env.czc()
        .arg("push")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("pushed 4 objects"));
    // Everything lands in the shared partitioned layout.
    let oid = env.marker_oid("data/model.bin.czc");
    let hex = &oid["blake3:".len()..];
    assert_eq!(
        fs::read(team.join("objects").join(&hex[..2]).join(&hex[2..])).unwrap(),
        bytes(1, 300_000)
    );
    // A second push has nothing to do.
    env.czc().arg("push").assert().success().stdout(
        predicate::str::starts_with("pushed 0 objects")
            .and(predicate::str::contains("4 already there")),
    );

    let share = env.dir.path().join("share");
    fs::create_dir_all(&share).unwrap();
    let other = clone_of(
        &env,
        &format!(
            "[remote]\nread = [\"share\", \"team\"]\n\n[remotes.share]\nurl = \"{}\"\nread_only = true\n\n[remotes.team]\nurl = \"{}\"\n",
            share.display(),
            team.display()
        ),
    );
    other.czc().arg("pull").assert().success().stdout(
        predicate::str::contains("fetched 4 objects")
            .and(predicate::str::contains("restored 3 files")),
    );
    assert_eq!(other.read("data/model.bin"), bytes(1, 300_000));
    assert_eq!(other.read("data/set/a.txt"), b"alpha");
    assert_eq!(other.read("data/set/b/c.bin"), bytes(2, 5000));
    other
        .czc()
        .arg("status")
        .assert()
        .success()
        .stdout("ok          data/model.bin\nok          data/set/ (2 files)\n");
}

#[test]
fn checkout_open_and_cat_fetch_through_on_a_miss() {
    let (env, team) = team_setup();
    env.czc().arg("push").assert().success();
    let other = clone_of(
        &env,
        &format!("[remotes.team]\nurl = \"{}\"\n", team.display()),
    );
    let out = other
        .czc()
        .args(["cat", "data/model.bin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, bytes(1, 300_000));
    other
        .czc()
        .args(["checkout", "data/set"])
        .assert()
        .success();
    assert_eq!(other.read("data/set/a.txt"), b"alpha");
}

#[test]
fn a_corrupt_copy_and_an_unreachable_remote_are_skipped_with_a_warning() {
    let (env, team) = team_setup();
    env.czc().arg("push").assert().success();
    let oid = env.marker_oid("data/model.bin.czc");
    let hex = &oid["blake3:".len()..];
    // `bad` holds a corrupt copy of the model; `gone` is not a folder at all.
    let bad = env.dir.path().join("bad");
    fs::create_dir_all(bad.join("objects").join(&hex[..2])).unwrap();
    fs::write(
        bad.join("objects").join(&hex[..2]).join(&hex[2..]),
        b"tampered",
    )
    .unwrap();
    let not_a_dir = env.dir.path().join("plain-file");
    fs::write(&not_a_dir, "x").unwrap();
    let other = clone_of(
        &env,
        &format!(
            "[remote]\nread = [\"gone\", \"bad\", \"team\"]\n\n[remotes.gone]\nurl = \"{}/sub\"\n\n[remotes.bad]\nurl = \"{}\"\n\n[remotes.team]\nurl = \"{}\"\n",
            not_a_dir.display(),
            bad.display(),
            team.display()
        ),
    );
    let out = other
        .czc()
        .args(["pull", "data/model.bin"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("remote gone failed") && err.contains("Not a directory"),
        "{err}"
    );
    assert!(err.contains("remote bad holds corrupt bytes"), "{err}");
    assert_eq!(other.read("data/model.bin"), bytes(1, 300_000));
    // The corrupt bytes never reached the cache.
    assert!(!other
        .cached_objects()
        .iter()
        .any(|p| fs::read(p).unwrap() == b"tampered"));
}

#[test]
fn a_missing_object_names_every_remote_tried() {
    let (env, team) = team_setup();
    // Nothing pushed: the team remote is empty.
    fs::create_dir_all(&team).unwrap();
    let other = clone_of(
        &env,
        &format!("[remotes.team]\nurl = \"{}\"\n", team.display()),
    );
    let out = other
        .czc()
        .args(["fetch", "data/model.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("czc: error: object blake3:"), "{err}");
    assert!(err.contains("team: not found"), "{err}");
    let out = other.czc().args(["checkout"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("team: not found"));
    assert!(!other.path("data/model.bin").exists());
    // A pull (fetch, then checkout, which tries the chain again) names each missing
    // object once: the file's and the folder's manifest.
    let out = other.czc().args(["pull"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("data/model.bin.czc") && err.contains("data/set.czc"),
        "{err}"
    );
}

#[test]
fn push_refuses_read_only_and_unsupported_remotes() {
    let (env, team) = team_setup();
    project_config(
        &env,
        &format!(
            "[remote]\ndefault = \"share\"\n[remotes.share]\nurl = \"{}\"\nread_only = true\n[remotes.bucket]\nurl = \"ftp://host/czc\"\n",
            team.display()
        ),
    );
    env.czc()
        .arg("push")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("remote 'share' is read-only"));
    assert!(!team.exists(), "nothing was written");
    env.czc()
        .args(["push", "--remote", "nowhere"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no remote named 'nowhere'"));
    env.czc()
        .args(["push", "--remote", "bucket"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("ftp://host/czc")
                .and(predicate::str::contains("unknown scheme")),
        );
}

#[test]
fn remote_add_list_remove_edit_the_project_file() {
    let env = TestEnv::new();
    env.write(
        ".czcache.toml",
        "# team settings\n[cache]\nindex = \"json\"\n",
    );
    env.czc()
        .args(["remote", "add", "team", "/srv/czc", "--default"])
        .assert()
        .success();
    env.czc()
        .args(["remote", "add", "share", "/mnt/share", "--read-only"])
        .assert()
        .success();
    env.czc()
        .args(["remote", "list"])
        .assert()
        .success()
        .stdout("share\t/mnt/share  (read-only)\nteam\t/srv/czc  (default)\n");
    let text = fs::read_to_string(env.path(".czcache.toml")).unwrap();
    assert!(text.starts_with("# team settings"), "{text}");
    env.czc()
        .args(["remote", "remove", "team"])
        .assert()
        .success();
    env.czc()
        .args(["remote", "remove", "team"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no remote named 'team'"));
    env.czc()
        .args(["remote", "add", "bad name", "/x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad name"));
    let out = env
        .czc()
        .args(["--json", "remote", "list"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["remotes"].as_array().unwrap().len(), 1);
    assert_eq!(list["remotes"][0]["name"], "share");
}

#[test]
fn unpushed_objects_are_evicted_last_and_never_silently() {
    let env = TestEnv::new().with_env("CZC_CACHE_SIZE_LIMIT", "250");
    let team = env.dir.path().join("team");
    project_config(
        &env,
        &format!(
            "[remote]\ndefault = \"team\"\n[remotes.team]\nurl = \"{}\"\n",
            team.display()
        ),
    );
    for (i, name) in ["a", "b"].iter().enumerate() {
        env.write(name, bytes(10 + i as u64, 100));
        env.czc().args(["save", name]).assert().success().stderr("");
    }
    // A third unpushed object: nothing may be evicted, and save says why.
    env.write("c", bytes(12, 100));
    env.czc().args(["save", "c"]).assert().success().stderr(
        predicate::str::contains("no remote holds yet").and(predicate::str::contains("czc push")),
    );
    assert_eq!(env.cached_objects().len(), 3);
    env.czc()
        .args(["cache", "info"])
        .assert()
        .stdout(predicate::str::contains("unpushed:  3 objects"));
    // Once pushed, the least recently used goes first.
    env.czc().args(["push"]).assert().success();
    env.czc()
        .args(["cache", "info"])
        .assert()
        .stdout(predicate::str::contains("unpushed:  0 objects"));
    std::thread::sleep(std::time::Duration::from_millis(5));
    env.write("d", bytes(13, 100));
    env.czc().args(["save", "d"]).assert().success().stderr("");
    let present = |name: &str| env.object(&env.marker_oid(&format!("{name}.czc"))).exists();
    // 400 bytes over a 250 limit: the two least recently used pushed objects go.
    assert!(!present("a") && !present("b") && present("c") && present("d"));
}

fn store_env() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new();
    let store = env.dir.path().join("store");
    project_config(
        &env,
        &format!(
            "[remotes.store]\nurl = \"{}\"\n[remotes.share]\nurl = \"{}\"\nread_only = true\n",
            store.display(),
            store.display()
        ),
    );
    (env, store)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn get_copies_a_key_through_the_cache_and_downloads_again_only_when_it_changed() {
    let (env, store) = store_env();
    fs::create_dir_all(store.join("models")).unwrap();
    fs::write(store.join("models/w.bin"), "weights v1").unwrap();
    let first = json(
        &env.czc()
            .args(["--json", "get", "store:models/w.bin"])
            .output()
            .unwrap(),
    );
    assert_eq!(first["downloaded"], true);
    let path = first["path"].as_str().unwrap().to_string();
    assert_eq!(fs::read(&path).unwrap(), b"weights v1");
    assert_eq!(crate::util::mode(Path::new(&path)), 0o444);
    let again = json(
        &env.czc()
            .args(["--json", "get", "store:models/w.bin"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        again["downloaded"], false,
        "an unchanged key is a local hit"
    );
    assert_eq!(again["path"], first["path"]);
    // The remote copy changes: the next get downloads it.
    fs::write(store.join("models/w.bin"), "weights v2!").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(store.join("models/w.bin"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let changed = json(
        &env.czc()
            .args(["--json", "get", "store:models/w.bin"])
            .output()
            .unwrap(),
    );
    assert_eq!(changed["downloaded"], true);
    assert_eq!(
        fs::read(changed["path"].as_str().unwrap()).unwrap(),
        b"weights v2!"
    );
    // Plain output is just the path.
    env.czc()
        .args(["get", "store:models/w.bin"])
        .assert()
        .success()
        .stdout(format!("{}\n", changed["path"].as_str().unwrap()));

    env.czc()
        .args(["get", "store:models/none.bin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("store:models/none.bin"));
    env.czc()
        .args(["get", "store:../escape"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad key '../escape'"));
    env.czc().args(["get", "store:"]).assert().code(2);
    env.czc()
        .args(["get", "nowhere:k"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no remote named 'nowhere'"));
}

#[test]
fn put_and_rm_are_conditional() {
    let (env, store) = store_env();
    let v1 = env.write("v1.txt", "version 1");
    env.write("v2.txt", "version 2");
    env.czc()
        .args(["put", "store:doc.txt", "v1.txt"])
        .assert()
        .success();
    assert_eq!(fs::read(store.join("doc.txt")).unwrap(), b"version 1");
    env.czc()
        .args(["put", "--if-absent", "store:doc.txt", "v2.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("changed by someone else"));
    let wrong = format!("{}", czcache::Oid::of_bytes(b"something else"));
    let right = format!("{}", czcache::Oid::of_bytes(b"version 1"));
    env.czc()
        .args(["put", "--if-match", &wrong, "store:doc.txt", "v2.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("changed by someone else"));
    assert_eq!(fs::read(store.join("doc.txt")).unwrap(), b"version 1");
    env.czc()
        .args(["put", "--if-match", &right, "store:doc.txt", "v2.txt"])
        .assert()
        .success();
    assert_eq!(fs::read(store.join("doc.txt")).unwrap(), b"version 2");
    // An older local file does not replace a newer stored copy.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&v1)
        .unwrap()
        .set_modified(past)
        .unwrap();
    env.czc()
        .args(["put", "--if-newer", "store:doc.txt", "v1.txt"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing written"));
    assert_eq!(fs::read(store.join("doc.txt")).unwrap(), b"version 2");
    env.czc()
        .args(["put", "--if-match", "md5:abc", "store:doc.txt", "v2.txt"])
        .assert()
        .code(2);
    env.czc()
        .args(["put", "share:doc.txt", "v2.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("read-only"));

    let v2 = format!("{}", czcache::Oid::of_bytes(b"version 2"));
    env.czc()
        .args(["rm", "--if-match", &wrong, "store:doc.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("changed by someone else"));
    assert!(store.join("doc.txt").exists());
    env.czc()
        .args(["rm", "--if-match", &v2, "store:doc.txt"])
        .assert()
        .success();
    assert!(!store.join("doc.txt").exists());
    env.czc()
        .args(["rm", "store:doc.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("store:doc.txt"));
}

#[test]
fn status_with_remote_reports_not_pushed_until_push() {
    let (env, _team) = team_setup();
    env.czc()
        .args(["status", "--remote"])
        .assert()
        .success()
        .stdout("not-pushed  data/model.bin\nnot-pushed  data/set/ (2 not-pushed of 2 files)\n");
    env.czc()
        .args(["push", "data/model.bin"])
        .assert()
        .success();
    env.czc()
        .args(["status", "--remote", "team"])
        .assert()
        .success()
        .stdout("ok          data/model.bin\nnot-pushed  data/set/ (2 not-pushed of 2 files)\n");
    env.czc().arg("push").assert().success();
    env.czc()
        .args(["status", "--remote"])
        .assert()
        .success()
        .stdout("ok          data/model.bin\nok          data/set/ (2 files)\n");
    // Without --remote nothing is asked of the remote.
    env.czc()
        .arg("status")
        .assert()
        .success()
        .stdout("ok          data/model.bin\nok          data/set/ (2 files)\n");
}

#[test]
fn a_fetched_copy_damaged_in_the_cache_is_fetched_again() {
    // Fetched objects are not fsynced (a remote holds them): if a crash damages one,
    // the next read finds it corrupt, quarantines it and fetches it again.
    let (env, team) = team_setup();
    env.czc().arg("push").assert().success();
    let other = clone_of(
        &env,
        &format!("[remotes.team]\nurl = \"{}\"\n", team.display()),
    );
    other.czc().arg("pull").assert().success();
    let oid = env.marker_oid("data/model.bin.czc");
    let hex = &oid["blake3:".len()..];
    let cached = other.cache.join("objects").join(&hex[..2]).join(&hex[2..]);
    fs::set_permissions(&cached, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&cached, vec![0u8; 300_000]).unwrap();
    fs::remove_file(other.path("data/model.bin")).unwrap();
    let out = other.czc().arg("checkout").output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("was corrupt") && err.contains("fetching it again"),
        "{err}"
    );
    assert_eq!(other.read("data/model.bin"), bytes(1, 300_000));
    assert_eq!(fs::read(&cached).unwrap(), bytes(1, 300_000));
}

#[test]
fn push_never_spreads_a_corrupt_cached_copy() {
    let (env, team) = team_setup();
    let oid = env.marker_oid("data/model.bin.czc");
    let hex = &oid["blake3:".len()..];
    let cached = env.cache.join("objects").join(&hex[..2]).join(&hex[2..]);
    fs::set_permissions(&cached, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&cached, vec![0u8; 300_000]).unwrap();
    let out = env.czc().arg("push").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("corrupt") && err.contains(&oid), "{err}");
    // The remote never got those bytes; the copy went to quarantine; the rest went up.
    assert!(!team
        .join("objects")
        .join(&hex[..2])
        .join(&hex[2..])
        .exists());
    assert!(!cached.exists());
    assert!(env
        .cache
        .join("quarantine")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    let set = env.marker_oid("data/set.czc");
    let set_hex = &set["blake3:".len()..];
    assert!(team
        .join("objects")
        .join(&set_hex[..2])
        .join(&set_hex[2..])
        .exists());
}

#[test]
fn named_caches_urls_and_user_remotes_work_from_the_command_line() {
    let env = TestEnv::new();
    // Outside any project's remotes: a remote in the user's config.
    let store = env.dir.path().join("store");
    env.czc()
        .args(["remote", "add", "store", store.to_str().unwrap(), "--user"])
        .assert()
        .success();
    let user_file = env.home.join(".config/czcache/config.toml");
    assert!(fs::read_to_string(&user_file)
        .unwrap()
        .contains("[remotes.store]"));
    assert!(
        !env.path(".czcache.toml").exists(),
        "the project file is untouched"
    );
    env.czc()
        .args(["remote", "add", "rel", "relative/folder", "--user"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("absolute path"));
    // A named cache that writes through to it, made the default.
    fs::write(
        &user_file,
        format!(
            "{}\n[cache]\ndefault = \"team\"\n\n[caches.team]\nwrite = \"store\"\n",
            fs::read_to_string(&user_file).unwrap()
        ),
    )
    .unwrap();
    env.write("w.bin", "weights");
    env.czc()
        .args(["put", "--cache", "team", "models/w.bin", "w.bin"])
        .assert()
        .success();
    assert_eq!(fs::read(store.join("models/w.bin")).unwrap(), b"weights");
    // --cache with no name: the default.
    let out = env
        .czc()
        .args(["get", "models/w.bin", "--cache"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(
        path.trim().ends_with("/w.bin"),
        "keeps the key's name: {path}"
    );
    assert_eq!(fs::read(path.trim()).unwrap(), b"weights");
    // The local cache alone keeps keys too.
    env.czc()
        .args([
            "put",
            "--cache",
            "local",
            "scratch/a.txt",
            "w.bin",
            "--if-absent",
        ])
        .assert()
        .success();
    env.czc()
        .args([
            "put",
            "--cache",
            "local",
            "scratch/a.txt",
            "w.bin",
            "--if-absent",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("changed by someone else"));
    env.czc()
        .args(["rm", "--cache", "local", "scratch/a.txt"])
        .assert()
        .success();
    env.czc()
        .args(["get", "--cache", "local", "scratch/a.txt"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("scratch/a.txt"));
    // A plain URL, no remote needed: a folder here.
    let share = env.dir.path().join("share/refs");
    fs::create_dir_all(&share).unwrap();
    fs::write(share.join("genome.fa"), ">chr1\n").unwrap();
    let url = share.join("genome.fa");
    let out = env
        .czc()
        .args(["get", url.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = String::from_utf8(out.stdout).unwrap();
    assert!(copy.trim().ends_with("genome.fa"));
    assert_eq!(fs::read(copy.trim()).unwrap(), b">chr1\n");
    // `cache list` names them all.
    let listed = env.czc().args(["cache", "list"]).output().unwrap();
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(
        text.contains("team\tsynchronized, read store, write store, default"),
        "{text}"
    );
    assert!(text.contains("local\tlocal"), "{text}");
    env.czc()
        .args(["get", "--cache", "nope", "k"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no cache named 'nope'"));
    env.czc().args(["get", "no-colon-here"]).assert().code(2);
    // A URL with a scheme czc does not know, or naming no file: one line, nothing kept.
    env.czc()
        .args(["get", "gopher://host/file.bin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unknown scheme 'gopher'"));
    env.czc()
        .args(["get", "s3://bucket"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("names no file"));
}
