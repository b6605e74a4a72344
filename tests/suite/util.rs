//! The test environment: a temp HOME, XDG folders, cache and a git project, so no test
//! touches the real ~/.cache or ~/.gitconfig.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub cache: PathBuf,
    pub project: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl TestEnv {
    /// A fresh environment with an empty cache and a `git init`ed project.
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let cache = dir.path().join("cache");
        let project = dir.path().join("project");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&project).unwrap();
        let env = TestEnv {
            dir,
            home,
            cache,
            project,
            extra_env: Vec::new(),
        };
        // git as the tests' user: a name, an email and `main`, never the real config.
        fs::write(
            env.home.join(".gitconfig"),
            "[user]\n\tname = Test\n\temail = t@example.com\n[init]\n\tdefaultBranch = main\n",
        )
        .unwrap();
        env.git_init(&env.project);
        env
    }

    /// A path in the test's folder, outside the project (other clones, remotes, caches).
    pub fn temp(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `program` (git, czc) run in `dir` with the test's HOME, czc on PATH, and the
    /// cache `cache` (a folder name in the test's folder: two clones may have two).
    pub fn command(&self, program: &str, dir: &Path, cache: &str) -> StdCommand {
        let mut cmd = StdCommand::new(program);
        let czc = assert_cmd::cargo::cargo_bin("czc");
        let bin = czc.parent().expect("czc is in a folder");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.current_dir(dir)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("PATH", path)
            .env("CZC_CACHE_DIR", self.temp(cache))
            .env_remove("CZC_SKIP_SMUDGE")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        cmd
    }

    pub fn run(
        &self,
        program: &str,
        dir: &Path,
        cache: &str,
        args: &[&str],
    ) -> std::process::Output {
        self.command(program, dir, cache)
            .args(args)
            .output()
            .unwrap()
    }

    /// [`run`](Self::run) that must succeed; its stdout.
    pub fn ok(&self, program: &str, dir: &Path, cache: &str, args: &[&str]) -> String {
        let out = self.run(program, dir, cache, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `program` with piped stdin and stdout, for feeding and reading it by hand.
    pub fn spawn_piped(&self, program: &str, dir: &Path, args: &[&str]) -> std::process::Child {
        self.command(program, dir, "cache")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// git in `dir`, with the default cache; must succeed.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.ok("git", dir, "cache", args)
    }

    /// czc in `dir`, with the default cache; must succeed.
    pub fn czc_at(&self, dir: &Path, args: &[&str]) -> String {
        self.ok("czc", dir, "cache", args)
    }

    /// A repository with czc installed and `*.bin` tracked, a folder remote `team` as
    /// default, and a bare `origin`.
    pub fn repo(&self, name: &str) -> PathBuf {
        let repo = self.temp(name);
        self.git(self.dir.path(), &["init", "-q", name]);
        self.czc_at(&repo, &["install"]);
        self.czc_at(&repo, &["track", "*.bin"]);
        let team = self.temp("team");
        self.czc_at(
            &repo,
            &["remote", "add", "team", team.to_str().unwrap(), "--default"],
        );
        self.git(self.dir.path(), &["init", "-q", "--bare", "origin.git"]);
        let origin = self.temp("origin.git");
        self.git(
            &repo,
            &["remote", "add", "origin", origin.to_str().unwrap()],
        );
        repo
    }

    pub fn git_init(&self, path: &Path) {
        let status = StdCommand::new("git")
            .args(["init", "-q"])
            .arg(path)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .expect("git is installed");
        assert!(status.success());
    }

    /// Adds an environment variable to every czc run.
    pub fn with_env(mut self, key: &str, value: impl Into<String>) -> TestEnv {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// `czc` run in the project folder.
    pub fn czc(&self) -> Command {
        self.czc_in(&self.project)
    }

    /// `czc` run in `dir`, with the test's HOME, XDG folders and cache.
    pub fn czc_in(&self, dir: &Path) -> Command {
        Command::from_std(self.std_command(dir))
    }

    /// The same command as a std Command (for spawning and killing).
    pub fn czc_std(&self) -> StdCommand {
        self.std_command(&self.project)
    }

    fn std_command(&self, dir: &Path) -> StdCommand {
        let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("czc"));
        cmd.current_dir(dir)
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("CZC_CACHE_DIR", &self.cache)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("CZC_CACHE_SIZE_LIMIT")
            .env_remove("CZC_CACHE_INDEX")
            .env_remove("CZC_CACHE_LINK");
        for (key, value) in &self.extra_env {
            cmd.env(key, value);
        }
        cmd
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.project.join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap()
    }

    /// The cache path of an object named `blake3:<hex>`.
    pub fn object(&self, oid: &str) -> PathBuf {
        let hex = oid.strip_prefix("blake3:").unwrap();
        self.cache.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// The oid a marker names.
    pub fn marker_oid(&self, rel: &str) -> String {
        let text = fs::read_to_string(self.path(rel)).unwrap();
        let line = text.lines().find(|l| l.starts_with("oid = ")).unwrap();
        line.trim_start_matches("oid = ")
            .trim_matches('"')
            .to_string()
    }

    /// Every object file in the cache.
    pub fn cached_objects(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let objects = self.cache.join("objects");
        if let Ok(shards) = fs::read_dir(objects) {
            for shard in shards.flatten() {
                for file in fs::read_dir(shard.path()).unwrap().flatten() {
                    found.push(file.path());
                }
            }
        }
        found.sort();
        found
    }
}

/// Mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `root`: content and mode, to prove a command changed nothing.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    for entry in walk(root) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        let content = if meta.is_file() {
            fs::read(&entry).unwrap()
        } else {
            Vec::new()
        };
        files.insert(entry, (content, meta.permissions().mode()));
    }
    files
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// The stderr of an output as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The stdout of an output as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The path of this repository's fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Starts `czc <args>` (a `serve` command listening on port 0) in `dir` and returns the
/// child and the `http://` address it announced on its first stderr line.
pub fn spawn_serve(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, String)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("czc"))
        .current_dir(dir)
        .env("HOME", dir)
        .env("CZC_CACHE_DIR", dir.join("cache"))
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

/// Kills a child process when dropped, so a failing test leaves no server behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a [`HostileServer`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostility {
    /// Accepts connections and never answers.
    Silent,
    /// Answers every request 200 with a Content-Length, sends a little of the body, stalls.
    StallsMidBody,
    /// Answers GETs 200 with a chunked body that never ends (until the client hangs up).
    EndlessBody,
}

/// A server on a free loopback port that misbehaves as told, for as long as the test
/// holds it. Every connection is bounded: it gives up after 60 s or 2 GiB.
pub struct HostileServer {
    pub url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HostileServer {
    pub fn start(hostility: Hostility) -> HostileServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < std::time::Duration::from_secs(300)
            {
                match listener.accept() {
                    Ok((socket, _)) => {
                        let stopped = stopped.clone();
                        std::thread::spawn(move || misbehave(socket, hostility, &stopped));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        HostileServer { url, stop }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn misbehave(
    mut socket: std::net::TcpStream,
    hostility: Hostility,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let live = || {
        !stop.load(std::sync::atomic::Ordering::Relaxed)
            && started.elapsed() < std::time::Duration::from_secs(60)
    };
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    // Read the request head.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while live() && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    let is_get = head.starts_with(b"GET ");
    match hostility {
        Hostility::Silent => {}
        Hostility::StallsMidBody => {
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
            let _ = socket.write_all(&[b'x'; 1000]);
        }
        Hostility::EndlessBody if is_get => {
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let chunk = vec![b'z'; 64 << 10];
            let mut sent: u64 = 0;
            while live() && sent < (2 << 30) {
                let framed = format!("{:x}\r\n", chunk.len());
                if socket.write_all(framed.as_bytes()).is_err()
                    || socket.write_all(&chunk).is_err()
                    || socket.write_all(b"\r\n").is_err()
                {
                    return;
                }
                sent += chunk.len() as u64;
            }
            return;
        }
        Hostility::EndlessBody => {
            let _ = socket.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
    // Hold the connection open, saying nothing more.
    while live() {
        match socket.read(&mut buf) {
            Ok(0) => return,
            _ => continue,
        }
    }
}

/// Runs a command, killing it (and failing the test) if it is still running after
/// `limit`: a hang is a failure, not a stuck test suite.
pub fn output_within(mut command: StdCommand, limit: std::time::Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still ran after {limit:?}: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// How a [`LyingServer`] lies about the one object it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Tells the truth (a control).
    None,
    /// HEAD reports the right size and hash; GET flips one byte of the body.
    FlippedByte,
    /// GET sends a Content-Length 5 bytes short, and that many bytes.
    ShortBody,
}

/// A `czc serve`-like HTTP remote on a free loopback port that holds one object and
/// lies about it as told. Stops with the test.
pub struct LyingServer {
    pub url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LyingServer {
    pub fn start(content: Vec<u8>, lie: Lie) -> LyingServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let content = std::sync::Arc::new(content);
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < std::time::Duration::from_secs(120)
            {
                match listener.accept() {
                    Ok((socket, _)) => {
                        let content = content.clone();
                        std::thread::spawn(move || lie_to(socket, &content, lie));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        LyingServer { url, stop }
    }
}

impl Drop for LyingServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn lie_to(mut socket: std::net::TcpStream, content: &[u8], lie: Lie) {
    use std::io::{BufRead, Write};
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let oid = format!("blake3:{}", blake3::hash(content).to_hex());
    let mut reader = std::io::BufReader::new(socket.try_clone().unwrap());
    // Keep-alive: answer requests until the client hangs up.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nX-Czc-Oid: {oid}\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
        );
        let answer = if request_line.starts_with("HEAD ") {
            format!("{head}Content-Length: {}\r\n\r\n", content.len()).into_bytes()
        } else {
            let mut body = content.to_vec();
            match lie {
                Lie::None => {}
                Lie::FlippedByte => {
                    let middle = body.len() / 2;
                    body[middle] ^= 0x01;
                }
                Lie::ShortBody => body.truncate(body.len() - 5),
            }
            let mut answer = format!("{head}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
            answer.extend_from_slice(&body);
            answer
        };
        if socket.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The remote round trip every remote kind must pass, written once: a project saves a
/// big file, a small file and a folder, pushes (then pushes again: nothing to send),
/// `status --remote` says everything is there; a second clone with an empty cache and
/// only the markers pulls, and gets the same bytes; `get`/`put` of a key go through too.
/// `config` is the `.czcache.toml` naming the remote `team` as default; `env_for` gives
/// each clone what it needs (credentials, tokens).
pub fn remote_round_trip(config: &str, env_for: &dyn Fn(TestEnv) -> TestEnv) {
    use predicates::prelude::*;
    let first = env_for(TestEnv::new());
    first.write(".czcache.toml", config);
    first.write("data/big.bin", bytes(201, 9 << 20));
    first.write("data/small.txt", "small");
    first.write("data/set/a.bin", bytes(202, 3000));
    first.write("data/set/sub/b.bin", bytes(203, 5000));
    first
        .czc()
        .args(["save", "data/big.bin", "data/small.txt", "data/set"])
        .assert()
        .success();
    first
        .czc()
        .arg("push")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("pushed 5 objects"));
    first.czc().arg("push").assert().success().stdout(
        predicate::str::starts_with("pushed 0 objects")
            .and(predicate::str::contains("5 already there")),
    );
    first
        .czc()
        .args(["status", "--remote", "--exit-code"])
        .assert()
        .success();
    first.write("key.csv", "a,b\n1,2\n");
    first
        .czc()
        .args(["put", "team:results/key.csv", "key.csv", "--if-absent"])
        .assert()
        .success();

    let second = env_for(TestEnv::new());
    second.write(".czcache.toml", config);
    for marker in ["data/big.bin.czc", "data/small.txt.czc", "data/set.czc"] {
        second.write(marker, first.read(marker));
    }
    second.czc().arg("pull").assert().success();
    assert_eq!(second.read("data/big.bin"), bytes(201, 9 << 20));
    assert_eq!(second.read("data/small.txt"), b"small");
    assert_eq!(second.read("data/set/a.bin"), bytes(202, 3000));
    assert_eq!(second.read("data/set/sub/b.bin"), bytes(203, 5000));
    second
        .czc()
        .args(["status", "--exit-code"])
        .assert()
        .success();
    let out = second
        .czc()
        .args(["get", "team:results/key.csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8(out.stdout).unwrap();
    assert_eq!(fs::read(path.trim()).unwrap(), b"a,b\n1,2\n");
}
