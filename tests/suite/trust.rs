//! Issue 9's rules of trust, end to end through the `czc` binary: a cloned repository
//! is untrusted input, the shared cache never loses unpushed data, and every fault
//! leaves a state the next run repairs.

use std::fs;
use std::os::unix::fs::symlink;

use crate::util::{snapshot, stderr, stdout, TestEnv};

/// Makes a folder `team` the project's default remote; returns its path.
fn with_team_remote(env: &TestEnv) -> std::path::PathBuf {
    let team = env.dir.path().join("team");
    env.write(
        ".czcache.toml",
        format!(
            "[remote]\ndefault = \"team\"\n[remotes.team]\nurl = \"{}\"\n",
            team.display()
        ),
    );
    team
}

fn save_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.czc().arg("save").args(args).output().unwrap();
    assert!(out.status.success(), "save failed: {}", stderr(&out));
    stdout(&out)
}

/// Puts `bytes` in the cache as an object (by saving a scratch file) and returns its oid.
fn cache_bytes(env: &TestEnv, bytes: &[u8]) -> String {
    let scratch = env.dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let file = scratch.join("object");
    fs::write(&file, bytes).unwrap();
    let out = env
        .czc_in(&scratch)
        .args(["save", "object"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let oid = stdout(&out).split_whitespace().nth(2).unwrap().to_string();
    fs::remove_dir_all(&scratch).unwrap();
    oid
}

/// A folder marker at `marker_rel` whose manifest (crafted, so it may be hostile) lists
/// `files` as (path, content); every object is put in the cache. Returns the manifest.
fn craft_folder_marker(env: &TestEnv, marker_rel: &str, files: &[(&str, &[u8])]) -> String {
    let lines: Vec<String> = files
        .iter()
        .map(|(path, content)| {
            let oid = cache_bytes(env, content);
            format!(
                "{{\"path\":\"{path}\",\"oid\":\"{oid}\",\"size\":{},\"executable\":false}}",
                content.len()
            )
        })
        .collect();
    let manifest = format!(
        "{{\"version\":\"czc-manifest/1\",\"files\":[\n{}\n]}}\n",
        lines.join(",\n")
    );
    let oid = cache_bytes(env, manifest.as_bytes());
    let size: usize = files.iter().map(|(_, c)| c.len()).sum();
    env.write(
        marker_rel,
        format!(
            "version = \"czc/1\"\noid = \"{oid}\"\nsize = {size}\nkind = \"dir\"\nfiles = {}\n",
            files.len()
        ),
    );
    manifest
}

fn git_dir_snapshot(env: &TestEnv) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(env.path(".git")).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            files.push((entry.path().to_path_buf(), fs::read(entry.path()).unwrap()));
        }
    }
    files
}

fn checkout_fails_with(env: &TestEnv, args: &[&str], expected: &str) -> String {
    let out = env.czc().arg("checkout").args(args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(expected), "expected {expected:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

// ---- B5: no path with a .git component ----

#[test]
fn a_marker_named_dot_git_never_writes_into_git() {
    let env = TestEnv::new();
    let before = git_dir_snapshot(&env);
    craft_folder_marker(
        &env,
        ".git.czc",
        &[
            ("config", b"[core]\n\tfsmonitor = touch /tmp/pwned\n"),
            ("hooks/post-checkout", b"#!/bin/sh\necho pwned\n"),
        ],
    );
    craft_folder_marker(&env, "sub/.GIT.czc", &[("HEAD", b"ref: refs/heads/evil\n")]);
    for args in [&[][..], &["--force"][..], &[".git.czc"][..]] {
        checkout_fails_with(&env, args, "inside a .git folder");
    }
    assert_eq!(git_dir_snapshot(&env), before, ".git is untouched");
    assert!(!env.path("sub/.GIT").exists());
    assert!(!env.path(".git/hooks/post-checkout").exists());
}

#[test]
fn a_manifest_listing_a_git_path_at_any_depth_is_refused_before_writing() {
    let env = TestEnv::new();
    craft_folder_marker(
        &env,
        "ds.czc",
        &[
            ("a.txt", b"harmless"),
            (
                "nested/repo/.git/hooks/post-checkout",
                b"#!/bin/sh\necho pwned\n",
            ),
        ],
    );
    let err = checkout_fails_with(&env, &["--force"], "ds.czc");
    assert!(err.contains(".git"), "{err}");
    assert!(
        !env.path("ds").exists(),
        "nothing of the folder was written"
    );
}

#[test]
fn save_of_a_folder_never_records_git_paths() {
    let env = TestEnv::new();
    env.write("ds/a.txt", "data");
    env.write("ds/.GIT/config", "not data");
    env.write("ds/sub/.git", "gitdir: ../../.git/modules/sub\n");
    save_ok(&env, &["ds"]);
    let marker = fs::read_to_string(env.path("ds.czc")).unwrap();
    assert!(marker.contains("files = 1\n"), "{marker}");
    fs::remove_dir_all(env.path("ds")).unwrap();
    env.czc().arg("checkout").assert().success();
    assert!(env.path("ds/a.txt").is_file());
    assert!(!env.path("ds/.GIT").exists() && !env.path("ds/sub").exists());
}

// ---- B6: never through a symlink ----

#[test]
fn checkout_never_writes_through_a_symlinked_folder() {
    let env = TestEnv::new();
    let outside = env.dir.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/keep.txt"), "precious").unwrap();
    // A folder marker whose data path is a symlink out of the project.
    env.write("real/sub/keep.txt", "from the repo");
    env.write("real/new.txt", "new");
    save_ok(&env, &["real"]);
    fs::copy(env.path("real.czc"), env.path("out.czc")).unwrap();
    symlink(&outside, env.path("out")).unwrap();
    // And one whose subfolder is.
    fs::remove_dir_all(env.path("real/sub")).unwrap();
    symlink(outside.join("sub"), env.path("real/sub")).unwrap();
    // And a file marker under a symlinked folder, named explicitly.
    env.write("f.bin", "file");
    save_ok(&env, &["f.bin"]);
    fs::copy(env.path("f.bin.czc"), outside.join("f.bin.czc")).unwrap();
    symlink(&outside, env.path("link")).unwrap();
    let before = snapshot(&outside);
    for args in [&[][..], &["--force"][..]] {
        let err = checkout_fails_with(&env, args, "is a symlink");
        assert!(err.contains("out") && err.contains("real/sub"), "{err}");
    }
    checkout_fails_with(&env, &["--force", "link/f.bin.czc"], "link is a symlink");
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing outside the project changed"
    );
    assert_eq!(fs::read(outside.join("sub/keep.txt")).unwrap(), b"precious");
}

#[test]
fn a_marker_that_is_a_symlink_out_of_the_project_is_refused() {
    let env = TestEnv::new();
    env.write("m.bin", "inside");
    save_ok(&env, &["m.bin"]);
    let outside = env.dir.path().join("elsewhere.czc");
    fs::rename(env.path("m.bin.czc"), &outside).unwrap();
    symlink(&outside, env.path("m.bin.czc")).unwrap();
    fs::remove_file(env.path("m.bin")).unwrap();
    checkout_fails_with(&env, &["m.bin.czc"], "outside the project");
    assert!(!env.path("m.bin").exists());
    // A symlink to a marker inside the project is fine.
    fs::rename(&outside, env.path("real.czc")).unwrap();
    fs::remove_file(env.path("m.bin.czc")).unwrap();
    symlink("real.czc", env.path("m.bin.czc")).unwrap();
    env.czc().args(["checkout", "m.bin.czc"]).assert().success();
    assert_eq!(env.read("m.bin"), b"inside");
}

// ---- B7: manifests and markers that contradict themselves ----

#[test]
fn a_manifest_listing_a_file_and_its_folder_is_refused_before_writing() {
    let env = TestEnv::new();
    craft_folder_marker(&env, "ds.czc", &[("a", b"file a"), ("a/b", b"file a/b")]);
    let err = checkout_fails_with(&env, &[], "manifest");
    assert!(
        err.contains("ds.czc")
            && err.contains("'a' is listed as a file and as the folder of 'a/b'"),
        "{err}"
    );
    assert!(!env.path("ds").exists());
    let out = env.czc().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("'a' is listed as a file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn duplicate_or_unsorted_manifest_paths_are_refused() {
    let env = TestEnv::new();
    craft_folder_marker(&env, "dup.czc", &[("x", b"1"), ("x", b"2")]);
    craft_folder_marker(&env, "order.czc", &[("b", b"1"), ("a", b"2")]);
    let err = checkout_fails_with(&env, &[], "listed twice");
    assert!(
        err.contains("dup.czc") && err.contains("not sorted") && err.contains("order.czc"),
        "{err}"
    );
    assert!(!env.path("dup").exists() && !env.path("order").exists());
}

#[test]
fn a_folder_marker_disagreeing_with_its_manifest_is_refused() {
    let env = TestEnv::new();
    craft_folder_marker(&env, "ds.czc", &[("a", b"12345"), ("b", b"678")]);
    let good = fs::read_to_string(env.path("ds.czc")).unwrap();
    env.write("ds.czc", good.replace("files = 2", "files = 3"));
    checkout_fails_with(&env, &[], "says files = 3, but its manifest lists 2");
    env.write("ds.czc", good.replace("size = 8", "size = 9"));
    checkout_fails_with(&env, &[], "says size = 9");
    assert!(!env.path("ds").exists());
    env.write("ds.czc", good);
    env.czc().arg("checkout").assert().success();
    assert_eq!(env.read("ds/a"), b"12345");
}

#[test]
fn a_file_marker_whose_size_disagrees_with_its_object_is_an_error() {
    let env = TestEnv::new();
    env.write("f.bin", "twelve bytes");
    save_ok(&env, &["f.bin"]);
    let good = fs::read_to_string(env.path("f.bin.czc")).unwrap();
    env.write("f.bin.czc", good.replace("size = 12", "size = 99"));
    let out = env.czc().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("f.bin.czc: says size = 99, but its object's size is 12"),
        "{}",
        stderr(&out)
    );
    fs::remove_file(env.path("f.bin")).unwrap();
    checkout_fails_with(&env, &[], "says size = 99");
    assert!(!env.path("f.bin").exists());
}

#[test]
fn a_marker_named_just_dot_czc_gets_a_clear_error() {
    let env = TestEnv::new();
    env.write("f.bin", "x");
    save_ok(&env, &["f.bin"]);
    fs::create_dir_all(env.path("sub")).unwrap();
    fs::copy(env.path("f.bin.czc"), env.path("sub/.czc")).unwrap();
    let before = fs::read(env.path("sub/.czc")).unwrap();
    checkout_fails_with(&env, &[], "sub/.czc: has no name before '.czc'");
    assert_eq!(
        fs::read(env.path("sub/.czc")).unwrap(),
        before,
        "the marker is not overwritten"
    );
}

#[test]
fn a_manifest_that_is_not_json_is_not_called_toml() {
    let env = TestEnv::new();
    let oid = cache_bytes(&env, b"{\"version\": \"czc-manifest/1\", \"files\": [");
    env.write(
        "ds.czc",
        format!("version = \"czc/1\"\noid = \"{oid}\"\nsize = 0\nkind = \"dir\"\nfiles = 0\n"),
    );
    let err = checkout_fails_with(&env, &[], "is not a valid manifest (JSON)");
    assert!(!err.contains("TOML"), "{err}");
}

#[test]
fn a_huge_marker_is_reported_with_its_real_size() {
    let env = TestEnv::new();
    env.write("big.bin.czc", vec![b'#'; 10_000_000]);
    checkout_fails_with(&env, &["big.bin.czc"], "is 10000000 bytes");
}

// ---- E12-E14: every fault leaves a state the next run repairs ----

/// Files under `dir` whose name starts with `.czc-tmp`, at any depth (`.git` skipped).
fn worktree_temps(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".czc-tmp"))
        .map(|e| e.into_path())
        .collect()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn a_checkout_killed_mid_file_leaves_nothing_git_sees_and_the_next_run_sweeps() {
    let env = TestEnv::new();
    let size: u64 = 300 << 20;
    let chunk = crate::util::bytes(21, 1 << 20);
    let mut file = fs::File::create(env.path("data/huge.bin")).unwrap_or_else(|_| {
        fs::create_dir_all(env.path("data")).unwrap();
        fs::File::create(env.path("data/huge.bin")).unwrap()
    });
    for _ in 0..(size >> 20) {
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    drop(file);
    save_ok(&env, &["data/huge.bin"]);
    fs::remove_file(env.path("data/huge.bin")).unwrap();
    let scratch = env.path(".git/czc-tmp");
    let mut child = env
        .czc_std()
        .args(["checkout"])
        .env("CZC_CACHE_LINK", "copy")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut killed_mid_copy = false;
    // The copy is written either as a temp file under .git/czc-tmp or as an unnamed
    // file (O_TMPFILE) in data/, seen only through the process's open descriptors.
    let unnamed_in_data = |pid: u32| -> u64 {
        let data = env.path("data");
        fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|fd| {
                fs::read_link(fd.path()).is_ok_and(|target| {
                    target.starts_with(&data) && target.to_string_lossy().ends_with("(deleted)")
                })
            })
            .filter_map(|fd| fs::metadata(fd.path()).ok())
            .map(|m| m.len())
            .sum()
    };
    while start.elapsed() < std::time::Duration::from_secs(30) {
        let written: u64 = files_under(&scratch)
            .iter()
            .filter(|p| p.extension().is_none_or(|e| e != "lock"))
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + unnamed_in_data(child.id());
        if written > 0 && written < size {
            child.kill().unwrap();
            killed_mid_copy = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.wait().unwrap();
    assert!(killed_mid_copy, "did not catch the checkout mid-file");
    assert!(
        worktree_temps(&env.project).is_empty(),
        "no temp in the working tree"
    );
    assert!(!env.path("data/huge.bin").exists());
    let git_status = std::process::Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--ignored",
            "--untracked-files=all",
        ])
        .current_dir(&env.project)
        .output()
        .unwrap();
    assert!(
        !stdout(&git_status).contains("czc-tmp"),
        "{}",
        stdout(&git_status)
    );
    assert!(
        !files_under(&scratch).is_empty(),
        "the killed run left its temp"
    );
    // Any next run in the project sweeps the dead process's temps.
    env.czc().arg("status").assert().success();
    assert!(
        files_under(&scratch).is_empty(),
        "{:?}",
        files_under(&scratch)
    );
    env.czc().arg("checkout").assert().success();
    assert_eq!(fs::metadata(env.path("data/huge.bin")).unwrap().len(), size);
    assert!(files_under(&scratch).is_empty());
}

#[test]
fn eight_processes_saving_at_once_never_remove_each_others_staging() {
    let env = TestEnv::new();
    for worker in 0..8 {
        for round in 0..12 {
            env.write(
                &format!("w{worker}/f{round}"),
                format!("worker {worker} round {round}"),
            );
        }
    }
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let env = &env;
            scope.spawn(move || {
                for round in 0..12 {
                    let out = env
                        .czc()
                        .args(["save", &format!("w{worker}/f{round}")])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "worker {worker} round {round}: {}",
                        stderr(&out)
                    );
                }
            });
        }
    });
    env.czc().args(["cache", "verify"]).assert().success();
    assert_eq!(env.cached_objects().len(), 96);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_exit_0() {
    use std::io::BufRead;
    let env = TestEnv::new();
    for i in 0..3000 {
        env.write(&format!("many/f{i:04}.bin"), format!("{i}"));
    }
    let names: Vec<String> = (0..3000).map(|i| format!("many/f{i:04}.bin")).collect();
    let mut args = vec!["save"];
    args.extend(names.iter().map(String::as_str));
    env.czc().args(&args).assert().success();
    for command in [
        &["status"][..],
        &["save", "many/f0000.bin", "many/f0001.bin"][..],
        &["cache", "info"][..],
        &["ls"][..],
    ] {
        let mut child = env
            .czc_std()
            .args(command)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        drop(reader); // `| head -1`
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{command:?}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{command:?}: {}", stderr(&out));
    }
}

// ---- C8, C9: a remote is untrusted and the network breaks ----

/// A project whose default remote `lab` is `url`, with a 3 MB file saved and removed
/// from the cache (so it must come from the remote).
fn project_with_remote(url: &str) -> (TestEnv, String) {
    let env = TestEnv::new().with_env("CZC_TIMEOUT", "1s");
    env.write(
        ".czcache.toml",
        format!("[remote]\ndefault = \"lab\"\n\n[remotes.lab]\nurl = \"{url}\"\n"),
    );
    env.write("data.bin", crate::util::bytes(31, 3_000_000));
    save_ok(&env, &["data.bin"]);
    let oid = env.marker_oid("data.bin.czc");
    (env, oid)
}

fn forget_object(env: &TestEnv, oid: &str) {
    fs::remove_file(env.object(oid)).unwrap();
    fs::remove_file(env.path("data.bin")).unwrap();
}

fn within(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut command = env.czc_std();
    command.args(args);
    crate::util::output_within(command, std::time::Duration::from_secs(60))
}

fn staged_bytes(env: &TestEnv) -> u64 {
    files_under(&env.cache.join("tmp"))
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "lock"))
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_server_that_never_answers_times_out_with_one_line_naming_it() {
    let server = crate::util::HostileServer::start(crate::util::Hostility::Silent);
    let (env, oid) = project_with_remote(&server.url);
    for args in [&["push"][..], &["status", "--remote"][..]] {
        let out = within(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&server.url) && err.contains("within 1s"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    forget_object(&env, &oid);
    for args in [&["fetch"][..], &["pull"][..]] {
        let out = within(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&server.url) && err.contains("1s"),
            "{args:?}: {err}"
        );
    }
    assert!(!env.path("data.bin").exists());
}

#[test]
fn a_download_that_stalls_mid_body_times_out_and_leaves_nothing() {
    let server = crate::util::HostileServer::start(crate::util::Hostility::StallsMidBody);
    let (env, oid) = project_with_remote(&server.url);
    forget_object(&env, &oid);
    let out = within(&env, &["pull"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("download stalled") && err.contains(&server.url),
        "{err}"
    );
    assert!(!env.path("data.bin").exists());
    assert!(!env.object(&oid).exists());
    assert_eq!(staged_bytes(&env), 0);
}

#[test]
fn an_endless_body_stops_at_the_expected_size_and_nothing_stays_behind() {
    let server = crate::util::HostileServer::start(crate::util::Hostility::EndlessBody);
    let (env, oid) = project_with_remote(&server.url);
    forget_object(&env, &oid);
    for args in [
        &["fetch"][..],
        &["checkout"][..],
        &["cat", "data.bin.czc"][..],
    ] {
        let out = within(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("sent more than the 3000000 bytes expected"),
            "{args:?}: {err}"
        );
        if args[0] == "cat" {
            assert!(out.stdout.is_empty(), "nothing served");
        }
        assert_eq!(staged_bytes(&env), 0, "{args:?}");
        assert!(!env.object(&oid).exists());
    }
    // An oid alone has no size: the cache limit bounds the download.
    let mut command = env.czc_std();
    command
        .env("CZC_CACHE_SIZE_LIMIT", "5MB")
        .args(["cat", &oid]);
    let out = crate::util::output_within(command, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sent more than the 5000000 bytes"),
        "{}",
        stderr(&out)
    );
    assert_eq!(staged_bytes(&env), 0);
}

#[test]
fn a_silent_s3_endpoint_times_out_too() {
    let server = crate::util::HostileServer::start(crate::util::Hostility::Silent);
    let env = TestEnv::new()
        .with_env("CZC_TIMEOUT", "1s")
        .with_env("AWS_ACCESS_KEY_ID", "test")
        .with_env("AWS_SECRET_ACCESS_KEY", "test");
    env.write(
        ".czcache.toml",
        format!(
            "[remote]\ndefault = \"lab\"\n\n[remotes.lab]\nurl = \"s3://bucket/czc\"\nendpoint = \"{}\"\n",
            server.url
        ),
    );
    env.write("data.bin", "small");
    save_ok(&env, &["data.bin"]);
    let out = within(&env, &["push"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("timed out") || stderr(&out).contains("timeout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn timeouts_are_configurable_per_remote_and_bad_values_are_named() {
    let server = crate::util::HostileServer::start(crate::util::Hostility::Silent);
    let env = TestEnv::new();
    env.write(
        ".czcache.toml",
        format!(
            "[remote]\ndefault = \"lab\"\n\n[remotes.lab]\nurl = \"{}\"\ntimeout = \"1500ms\"\n",
            server.url
        ),
    );
    env.write("data.bin", "small");
    save_ok(&env, &["data.bin"]);
    let out = within(&env, &["push"]);
    assert!(stderr(&out).contains("within 1.5s"), "{}", stderr(&out));
    let out = within(&env, &["status", "--remote"]);
    assert!(stderr(&out).contains("within 1.5s"), "{}", stderr(&out));
    // The remote's own variable wins over the file.
    let mut command = env.czc_std();
    command.env("CZC_REMOTE_LAB_TIMEOUT", "1").arg("push");
    let out = crate::util::output_within(command, std::time::Duration::from_secs(60));
    assert!(stderr(&out).contains("within 1s"), "{}", stderr(&out));
    let mut command = env.czc_std();
    command.env("CZC_TIMEOUT", "soon").arg("push");
    let out = crate::util::output_within(command, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("CZC_TIMEOUT") && stderr(&out).contains("soon"),
        "{}",
        stderr(&out)
    );
    env.write(
        ".czcache.toml",
        format!(
            "[remotes.lab]\nurl = \"{}\"\ntimeout = \"10 fortnights\"\n",
            server.url
        ),
    );
    let out = within(&env, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(".czcache.toml") && stderr(&out).contains("fortnights"),
        "{}",
        stderr(&out)
    );
    // `packs` is a boolean: anything else is named with its file.
    env.write(
        ".czcache.toml",
        format!("[remotes.lab]\nurl = \"{}\"\npacks = \"yes\"\n", server.url),
    );
    let out = within(&env, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(".czcache.toml") && err.contains("\"yes\""),
        "{err}"
    );
}

// ---- A1: nothing is lost in a cache that several projects share ----

#[test]
fn another_projects_small_limit_never_evicts_an_unpushed_object() {
    // Project A has a remote but has not pushed its 3 MB object yet.
    let env = TestEnv::new();
    with_team_remote(&env);
    env.write("model.bin", crate::util::bytes(41, 3_000_000));
    save_ok(&env, &["model.bin"]);
    let oid = env.marker_oid("model.bin.czc");
    // Project B, sharing the cache: no remote, a project file that tries to shrink the
    // cache, and a user whose limit is smaller than A's object.
    let b = env.dir.path().join("b");
    env.git_init(&b);
    fs::write(b.join(".czcache.toml"), "[cache]\nsize_limit = \"1KiB\"\n").unwrap();
    fs::write(b.join("small.txt"), "tiny").unwrap();
    fs::write(b.join("other.txt"), "tiny too").unwrap();
    let out = env
        .czc_in(&b)
        .env("CZC_CACHE_SIZE_LIMIT", "1MB")
        .args(["save", "small.txt", "other.txt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cache.size_limit is ignored"), "{err}");
    let over: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("over its limit"))
        .collect();
    assert_eq!(over.len(), 1, "said once per command: {err}");
    assert!(over[0].contains("czc push"), "{err}");
    assert!(
        env.object(&oid).exists(),
        "A's unpushed object survived B's save"
    );
    // `cache evict` keeps it too, unless told explicitly.
    let out = env
        .czc_in(&b)
        .env("CZC_CACHE_SIZE_LIMIT", "1MB")
        .args(["cache", "evict"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("kept 3 objects no remote holds yet"),
        "{}",
        stdout(&out)
    );
    assert!(env.object(&oid).exists());
    // `cache info` says which project has objects awaiting push.
    let info = env.czc_in(&b).args(["cache", "info"]).output().unwrap();
    let text = stdout(&info);
    assert!(
        text.contains(&format!("1 objects (2.9 MiB) in {}", env.project.display())),
        "{text}"
    );
    assert!(text.contains(&b.display().to_string()), "{text}");
    // Once A pushes, LRU may take it.
    env.czc().arg("push").assert().success();
    fs::write(b.join("third.txt"), "and another").unwrap();
    env.czc_in(&b)
        .env("CZC_CACHE_SIZE_LIMIT", "1MB")
        .args(["save", "third.txt"])
        .assert()
        .success();
    assert!(!env.object(&oid).exists(), "pushed, so evictable");
    // And it comes back from the remote.
    fs::remove_file(env.path("model.bin")).unwrap();
    env.czc().arg("checkout").assert().success();
    assert_eq!(
        fs::metadata(env.path("model.bin")).unwrap().len(),
        3_000_000
    );
}

#[test]
fn evict_include_unpushed_is_explicit_and_says_so() {
    let env = TestEnv::new();
    env.write("a.bin", crate::util::bytes(42, 10_000));
    save_ok(&env, &["a.bin"]);
    let oid = env.marker_oid("a.bin.czc");
    let out = env
        .czc()
        .args(["cache", "evict", "--to", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("kept 1 objects"), "{}", stdout(&out));
    assert!(env.object(&oid).exists());
    let out = env
        .czc()
        .args(["cache", "evict", "--to", "0", "--include-unpushed"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("--include-unpushed: objects no remote holds were evicted too"),
        "{}",
        stdout(&out)
    );
    assert!(!env.object(&oid).exists());
}

// ---- A4: checkout ignores what it materializes ----

#[test]
fn checkout_adds_the_gitignore_entry_a_copied_marker_lacks() {
    let env = TestEnv::new();
    env.write("data/big.bin", crate::util::bytes(51, 20_000));
    env.write("sets/a/x.txt", "x");
    save_ok(&env, &["data/big.bin", "sets/a"]);
    fs::remove_file(env.path("data/.gitignore")).unwrap();
    fs::remove_file(env.path("sets/.gitignore")).unwrap();
    fs::remove_file(env.path("data/big.bin")).unwrap();
    env.czc().arg("checkout").assert().success();
    assert_eq!(
        fs::read_to_string(env.path("data/.gitignore")).unwrap(),
        "/big.bin\n"
    );
    assert_eq!(
        fs::read_to_string(env.path("sets/.gitignore")).unwrap(),
        "/a\n"
    );
    let git = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(&env.project)
        .output()
        .unwrap();
    let listed = stdout(&git);
    assert!(
        !listed.contains("big.bin\n") && !listed.contains("x.txt"),
        "{listed}"
    );
}

// ---- E11: a broken index is repaired by verify ----

#[test]
fn a_garbage_truncated_or_folder_index_is_rebuilt_by_verify() {
    for (kind, file) in [
        ("sqlite", "index.sqlite"),
        ("csv", "index.csv"),
        ("json", "index.json"),
    ] {
        for damage in ["garbage", "truncated", "folder"] {
            let env = TestEnv::new().with_env("CZC_CACHE_INDEX", kind);
            for i in 0..50 {
                env.write(&format!("f{i}.bin"), crate::util::bytes(60 + i, 3000));
            }
            let names: Vec<String> = (0..50).map(|i| format!("f{i}.bin")).collect();
            let mut args = vec!["save"];
            args.extend(names.iter().map(String::as_str));
            env.czc().args(&args).assert().success();
            let index = env.cache.join(file);
            match damage {
                "garbage" => fs::write(&index, crate::util::bytes(1, 10_000)).unwrap(),
                "truncated" => {
                    let bytes = fs::read(&index).unwrap();
                    let _ = fs::remove_file(env.cache.join(format!("{file}-wal")));
                    let _ = fs::remove_file(env.cache.join(format!("{file}-shm")));
                    fs::write(&index, &bytes[..bytes.len() / 2]).unwrap();
                }
                _ => {
                    fs::remove_file(&index).unwrap();
                    fs::create_dir_all(index.join("sub")).unwrap();
                }
            }
            let out = env.czc().args(["cache", "info"]).output().unwrap();
            let err = stderr(&out);
            if out.status.success() {
                // A truncated text index may still parse as fewer rows: fine, nothing lost.
                assert!(
                    damage == "truncated" && kind != "sqlite",
                    "{kind} {damage}: {}",
                    stdout(&out)
                );
            } else {
                assert_eq!(out.status.code(), Some(1));
                assert!(err.contains("czc cache verify"), "{kind} {damage}: {err}");
                assert!(!err.contains("panicked"), "{err}");
            }
            let out = env.czc().args(["cache", "verify"]).output().unwrap();
            assert!(out.status.success(), "{kind} {damage}: {}", stderr(&out));
            let info = env
                .czc()
                .args(["--json", "cache", "info"])
                .output()
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
            assert_eq!(json["objects"], 50, "{kind} {damage}");
            env.czc().arg("status").assert().success();
        }
    }
}

// ---- F16: gc --cache with repositories that have no commits or are gone ----

#[test]
fn gc_cache_skips_gone_repositories_works_without_commits_and_keeps_unpushed() {
    let env = TestEnv::new();
    env.write("kept.bin", "referenced by the working tree");
    env.write("stray.bin", "saved, never pushed, marker deleted");
    save_ok(&env, &["kept.bin", "stray.bin"]);
    let stray = env.marker_oid("stray.bin.czc");
    fs::remove_file(env.path("stray.bin.czc")).unwrap();
    // Another project on the same cache with no commit yet, and one that is gone.
    let fresh = env.dir.path().join("fresh");
    env.git_init(&fresh);
    fs::write(fresh.join("x.bin"), "only in fresh's working tree").unwrap();
    env.czc_in(&fresh)
        .args(["save", "x.bin"])
        .assert()
        .success();
    let gone = env.dir.path().join("gone");
    env.git_init(&gone);
    env.czc_in(&gone).arg("status").assert().success();
    fs::remove_dir_all(&gone).unwrap();
    let out = env
        .czc()
        .args(["gc", "--cache", "--keep-younger-than", "0s"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("gc skipped") && err.contains("gone"), "{err}");
    assert!(
        stdout(&out).contains("deleted 0 objects"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("1 that no remote holds yet"),
        "{}",
        stdout(&out)
    );
    assert!(
        env.object(&stray).exists(),
        "an unpushed object is never gc'ed"
    );
    assert_eq!(env.cached_objects().len(), 3);
}

// ---- F20: what a new user tripped over ----

#[test]
fn markers_gitignore_and_project_file_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.write("plain.txt", "written by an ordinary tool");
    let usual = crate::util::mode(&env.path("plain.txt"));
    env.czc().arg("init").assert().success();
    env.write("data.bin", "d");
    save_ok(&env, &["data.bin"]);
    for file in [".czcache.toml", "data.bin.czc", ".gitignore"] {
        assert_eq!(crate::util::mode(&env.path(file)), usual, "{file}");
    }
    // A file the user made private stays private when czc rewrites it.
    fs::set_permissions(env.path(".gitignore"), fs::Permissions::from_mode(0o600)).unwrap();
    env.write("more.bin", "m");
    save_ok(&env, &["more.bin"]);
    assert_eq!(crate::util::mode(&env.path(".gitignore")), 0o600);
}

#[test]
fn remote_add_keeps_the_templates_comments_under_their_table() {
    let env = TestEnv::new();
    env.czc().arg("init").assert().success();
    env.czc()
        .args(["remote", "add", "team", "/srv/team", "--default"])
        .assert()
        .success();
    let text = fs::read_to_string(env.path(".czcache.toml")).unwrap();
    let comment = text.find("# index").unwrap();
    let cache = text.find("[cache]").unwrap();
    let remotes = text.find("[remotes.team]").unwrap();
    assert!(cache < comment && comment < remotes, "{text}");
    assert!(text.trim_end().ends_with("default = \"team\""), "{text}");
}

#[test]
fn bad_remote_settings_are_named_before_anything_happens() {
    let env = TestEnv::new();
    env.write("data.bin", "d");
    save_ok(&env, &["data.bin"]);
    for url in ["s3:bucket", "gopher:x", "gopher://host/x"] {
        let out = env
            .czc()
            .args(["remote", "add", "lab", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        assert!(
            stderr(&out).contains("unknown scheme"),
            "{url}: {}",
            stderr(&out)
        );
        env.write(
            ".czcache.toml",
            format!("[remote]\ndefault = \"lab\"\n[remotes.lab]\nurl = \"{url}\"\n"),
        );
        let out = env.czc().arg("push").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        assert!(stderr(&out).contains(url), "{url}: {}", stderr(&out));
        assert!(!env.path("s3:bucket").exists() && !env.path("gopher:x").exists());
    }
    env.write(
        ".czcache.toml",
        "[remote]\nread = [\"lab\", \"nope\"]\n[remotes.lab]\nurl = \"/srv/lab\"\n",
    );
    let out = env.czc().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("remote.read") && stderr(&out).contains("'nope'"),
        "{}",
        stderr(&out)
    );
    for endpoint in ["", "localhost:9000", "/relative"] {
        env.write(
            ".czcache.toml",
            format!("[remote]\ndefault = \"lab\"\n[remotes.lab]\nurl = \"s3://bucket/czc\"\nendpoint = \"{endpoint}\"\n"),
        );
        let out = env.czc().arg("push").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{endpoint:?}");
        let err = stderr(&out);
        assert!(
            err.contains("endpoint is an absolute url") && !err.contains("panicked"),
            "{endpoint:?}: {err}"
        );
    }
    env.write(".czcache.toml", "");
    let out = env
        .czc()
        .env("CZC_LOCK_TIMEOUT", "a while")
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("CZC_LOCK_TIMEOUT") && stderr(&out).contains("a while"),
        "{}",
        stderr(&out)
    );
}

// ---- A3: a folder whose manifest was evicted ----

#[test]
fn a_folder_whose_manifest_was_evicted_reports_its_files_and_pushes() {
    let env = TestEnv::new();
    for i in 0..3 {
        env.write(&format!("ds/f{i}.txt"), format!("file {i}"));
    }
    save_ok(&env, &["ds"]);
    let manifest = env.marker_oid("ds.czc");
    // No remote: the manifest is rebuilt from the unchanged folder.
    fs::remove_file(env.object(&manifest)).unwrap();
    env.czc()
        .arg("status")
        .assert()
        .success()
        .stdout("ok          ds/ (3 files)\n");
    assert!(env.object(&manifest).exists(), "rebuilt and admitted again");
    fs::remove_file(env.object(&manifest)).unwrap();
    env.write("ds/f1.txt", "changed");
    let out = env.czc().arg("status").output().unwrap();
    assert!(
        stdout(&out).starts_with("modified    ds"),
        "{}",
        stdout(&out)
    );
    env.write("ds/f1.txt", "file 1");

    // With a remote that holds everything: push fetches the manifest back.
    let team = with_team_remote(&env);
    env.czc().arg("push").assert().success();
    fs::remove_file(env.object(&manifest)).unwrap();
    let out = env.czc().arg("push").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("pushed 0 objects"),
        "{}",
        stdout(&out)
    );
    env.czc()
        .arg("status")
        .assert()
        .success()
        .stdout("ok          ds/ (3 files)\n");

    // Neither cached, nor on a remote, nor rebuildable: push says exactly what to run.
    fs::remove_dir_all(&team).unwrap();
    fs::remove_file(env.object(&manifest)).unwrap();
    env.write("ds/f2.txt", "edited since");
    let out = env.czc().arg("push").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`czc save ds`"), "{}", stderr(&out));
}

// ---- F19, F20: machine-readable output and CI gates ----

#[test]
fn status_exit_code_verbose_files_and_json_paths_relative_to_the_project() {
    let env = TestEnv::new();
    env.write("ds/a.txt", "a");
    env.write("ds/sub/b.txt", "b");
    env.write("f.bin", "f");
    save_ok(&env, &["ds", "f.bin"]);
    env.czc().args(["status", "--exit-code"]).assert().code(0);
    env.write("ds/sub/b.txt", "changed");
    fs::remove_file(env.path("ds/a.txt")).unwrap();
    env.czc().arg("status").assert().code(0);
    env.czc().args(["status", "--exit-code"]).assert().code(1);
    let out = env.czc().args(["-v", "status"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("  missing     ds/a.txt\n"), "{text}");
    assert!(text.contains("  modified    ds/sub/b.txt\n"), "{text}");
    // JSON: paths relative to the project, from any folder in it.
    let out = env
        .czc_in(&env.path("ds"))
        .args(["--json", "status"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["files"][0]["path"], "ds");
    assert_eq!(json["files"][0]["marker"], "ds.czc");
    assert_eq!(json["files"][0]["changed"][0]["path"], "a.txt");
    assert_eq!(json["files"][1]["path"], "f.bin");
    // A failure in JSON mode still prints a JSON object on stdout.
    let out = env
        .czc()
        .args(["--json", "cat", "nope.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("nope.bin"),
        "{json}"
    );
}

// ---- E12: what killed pushes leave in a shared folder remote ----

#[test]
fn push_and_gc_sweep_stale_upload_temps_from_a_folder_remote() {
    let env = TestEnv::new();
    let team = with_team_remote(&env);
    env.write("a.bin", crate::util::bytes(71, 5000));
    save_ok(&env, &["a.bin"]);
    let oid = env.marker_oid("a.bin.czc");
    let hex = &oid["blake3:".len()..];
    let shard = team.join("objects").join(&hex[..2]);
    let other_shard = team
        .join("objects")
        .join(if &hex[..2] == "00" { "01" } else { "00" });
    fs::create_dir_all(&shard).unwrap();
    fs::create_dir_all(&other_shard).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let make = |path: std::path::PathBuf, stale: bool| {
        let file = fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, &[0u8; 1000]).unwrap();
        if stale {
            file.set_modified(two_hours_ago).unwrap();
        }
        path
    };
    let stale = make(shard.join(".czc-tmp-killed"), true);
    let live = make(shard.join(".czc-tmp-live"), false);
    let stale_elsewhere = make(other_shard.join(".czc-tmp-old"), true);
    env.czc().arg("push").assert().success();
    assert!(!stale.exists(), "push sweeps the folders it writes to");
    assert!(live.exists(), "a live upload is left alone");
    assert!(stale_elsewhere.exists());
    env.czc()
        .args(["gc", "--remote", "team"])
        .assert()
        .success();
    assert!(!stale_elsewhere.exists(), "gc --remote sweeps everywhere");
    assert!(live.exists());
    // And the pushed object is intact.
    assert_eq!(
        fs::read(shard.join(&hex[2..])).unwrap(),
        crate::util::bytes(71, 5000)
    );
}

// ---- E15: a read never fails on the index's bookkeeping ----

#[test]
fn a_read_whose_object_is_present_survives_an_index_that_cannot_be_written() {
    let env = TestEnv::new().with_env("CZC_CACHE_INDEX", "csv");
    env.write("a.txt", "the content");
    save_ok(&env, &["a.txt"]);
    fs::remove_file(env.path("a.txt")).unwrap();
    // Every index write now fails (its lock cannot be opened).
    let lock = env.cache.join("index.csv.lock");
    let _ = fs::remove_file(&lock);
    fs::create_dir_all(&lock).unwrap();
    let out = env.czc().args(["cat", "a.txt"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"the content");
    assert_eq!(
        stderr(&out).matches("could not record").count(),
        1,
        "{}",
        stderr(&out)
    );
    let out = env.czc().arg("checkout").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("a.txt"), b"the content");
}

// ---- D: czc get checks bytes against everything the remote reports ----

#[test]
fn get_refuses_bytes_that_disagree_with_the_remotes_size_or_hash() {
    let content = crate::util::bytes(81, 50_000);
    let key = format!("objects/{}", {
        let hex = blake3::hash(&content).to_hex().to_string();
        format!("{}/{}", &hex[..2], &hex[2..])
    });
    for lie in [crate::util::Lie::FlippedByte, crate::util::Lie::ShortBody] {
        let server = crate::util::LyingServer::start(content.clone(), lie);
        let env = TestEnv::new();
        env.write(
            ".czcache.toml",
            format!("[remotes.lab]\nurl = \"{}\"\n", server.url),
        );
        for attempt in 0..2 {
            let out = env
                .czc()
                .args(["get", &format!("lab:{key}")])
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{lie:?} {attempt}: {}",
                stdout(&out)
            );
            assert!(
                stderr(&out).contains("disagree"),
                "{lie:?}: {}",
                stderr(&out)
            );
            assert!(env.cached_objects().is_empty(), "{lie:?}: nothing kept");
            assert_eq!(staged_bytes(&env), 0);
        }
    }
    // The same server telling the truth: served, then a local hit.
    let server = crate::util::LyingServer::start(content.clone(), crate::util::Lie::None);
    let env = TestEnv::new();
    env.write(
        ".czcache.toml",
        format!("[remotes.lab]\nurl = \"{}\"\n", server.url),
    );
    let out = env
        .czc()
        .args(["--json", "get", &format!("lab:{key}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fs::read(json["path"].as_str().unwrap()).unwrap(), content);
    let out = env
        .czc()
        .args(["--json", "get", &format!("lab:{key}")])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["downloaded"], false);
}

// ---- F18: a remote that is down, when another has everything ----

#[test]
fn pull_from_a_remote_that_is_down_says_what_happened_and_succeeds_from_the_rest() {
    let env = TestEnv::new();
    let team = env.dir.path().join("team");
    let config = format!(
        "[remote]\ndefault = \"team\"\nread = [\"lab\", \"team\"]\n[remotes.lab]\nurl = \"http://127.0.0.1:1\"\n[remotes.team]\nurl = \"{}\"\n",
        team.display()
    );
    env.write(".czcache.toml", &config);
    env.write("a.bin", crate::util::bytes(93, 10_000));
    save_ok(&env, &["a.bin"]);
    env.czc()
        .args(["push", "--remote", "team"])
        .assert()
        .success();
    let clone = TestEnv::new();
    clone.write(".czcache.toml", &config);
    clone.write("a.bin.czc", env.read("a.bin.czc"));
    let out = clone
        .czc()
        .args(["pull", "--remote", "lab"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("came from the other remotes instead"), "{err}");
    assert_eq!(clone.read("a.bin"), crate::util::bytes(93, 10_000));
    // When nothing else has it, the failure stands.
    let lonely = TestEnv::new();
    lonely.write(".czcache.toml", &config);
    let missing = crate::util::bytes(94, 100);
    lonely.write(
        "b.bin.czc",
        format!(
            "version = \"czc/1\"\noid = \"blake3:{}\"\nsize = 100\n",
            blake3::hash(&missing).to_hex()
        ),
    );
    let out = lonely
        .czc()
        .args(["pull", "--remote", "lab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

// ---- E15: a cache this user can only read ----

#[test]
fn a_read_only_cache_serves_status_cat_and_checkout() {
    for index in ["sqlite", "csv", "json"] {
        let env = TestEnv::new().with_env("CZC_CACHE_INDEX", index);
        env.write("a.txt", "read me");
        env.write("ds/b.txt", "and me");
        save_ok(&env, &["a.txt", "ds"]);
        fs::remove_file(env.path("a.txt")).unwrap();
        // A private mount namespace in which the cache is a read-only bind mount (root
        // ignores file modes, so a chmod would prove nothing).
        let cache = env.cache.display().to_string();
        let czc = assert_cmd::cargo::cargo_bin("czc").display().to_string();
        let script = format!(
            "mount --bind {cache} {cache} && mount -o remount,ro,bind {cache} && \
             touch {cache}/probe 2>/dev/null && exit 99; \
             {czc} status && {czc} cat a.txt && {czc} checkout && {czc} status"
        );
        // `unshare` with the test's environment (HOME, cache, XDG folders).
        let template = env.czc_std();
        let mut command = std::process::Command::new("unshare");
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .args(["-m", "sh", "-c", &script])
            .current_dir(&env.project);
        let out = command.output().unwrap();
        assert_ne!(
            out.status.code(),
            Some(99),
            "{index}: the mount is not read-only"
        );
        assert!(
            out.status.success(),
            "{index}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(text.contains("missing     a.txt"), "{index}: {text}");
        assert!(text.contains("read me"), "{index}: {text}");
        assert!(text.contains("ok          a.txt"), "{index}: {text}");
        assert_eq!(env.read("a.txt"), b"read me");
    }
}
