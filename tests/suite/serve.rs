//! `czc serve` with the real server binary on a free loopback port, driven by the real
//! client (`HttpStorage`, `czc push`/`pull`) and by raw HTTP for the bad requests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::util::{bytes, stderr, TestEnv};
use czcache::storage::{HttpStorage, ReadStorage, StorageError, WriteStorage};
use czcache::Oid;
use predicates::prelude::*;

const TOKEN: &str = "s3cret-token";

/// A running `czc serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    url: String,
    folder: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("served");
        let tokens = dir.path().join("tokens");
        fs::write(&tokens, format!("# lab tokens\n{TOKEN}\nother-token\n")).unwrap();
        let mut args = vec![
            "serve",
            "served",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens",
        ];
        args.extend_from_slice(extra);
        let (child, url) = crate::util::spawn_serve(dir.path(), &args, &[]);
        Server {
            child: Some(child),
            url,
            folder,
            _dir: dir,
        }
    }

    fn client(&self, token: Option<&str>) -> HttpStorage {
        HttpStorage::new(&self.url, token.map(str::to_owned)).unwrap()
    }

    /// Stops the server with SIGTERM and returns whether it exited cleanly.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap().success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn object_file(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, Oid) {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    (path, Oid::of_bytes(content))
}

#[test]
fn the_http_client_keeps_the_storage_contract() {
    let server = Server::start(&[]);
    let remote = server.client(Some(TOKEN));
    let scratch = tempfile::tempdir().unwrap();
    let (file, oid) = object_file(scratch.path(), "a", b"hello over http");
    let key = oid.object_key();
    assert!(!remote.exists(&key).unwrap());
    assert_eq!(
        remote.copy_to(&key, &scratch.path().join("miss")).unwrap(),
        None
    );
    remote.put_if_absent(&key, &file).unwrap();
    assert!(matches!(
        remote.put_if_absent(&key, &file),
        Err(StorageError::LostRace { .. })
    ));
    assert!(remote.exists(&key).unwrap());
    assert_eq!(remote.hash(&key).unwrap(), Some(oid));
    assert!(remote.last_modified(&key).unwrap().is_some());
    let dest = scratch.path().join("copy");
    assert_eq!(remote.copy_to(&key, &dest).unwrap(), Some(15));
    assert_eq!(fs::read(&dest).unwrap(), b"hello over http");
    assert_eq!(remote.list("objects/").unwrap(), vec![key.clone()]);
    // The object is stored in the folder's remote layout.
    assert_eq!(
        fs::read(server.folder.join(&key)).unwrap(),
        b"hello over http"
    );

    // Batched existence checks.
    let mut keys: Vec<String> = (0..40u32)
        .map(|i| Oid::of_bytes(&i.to_le_bytes()).object_key())
        .collect();
    keys.push(key.clone());
    let present = remote.exists_many(&keys).unwrap();
    assert_eq!(present.iter().filter(|p| **p).count(), 1);
    assert!(present[40]);

    // Conditional delete.
    let other = Oid::of_bytes(b"other");
    assert!(matches!(
        remote.delete_if_hash_matches(&key, &other),
        Err(StorageError::LostRace { .. })
    ));
    remote.delete_if_hash_matches(&key, &oid).unwrap();
    assert!(!remote.exists(&key).unwrap());
    assert!(!remote.delete(&key).unwrap());

    // A malformed object key is refused before any request.
    assert!(matches!(
        remote.exists("objects/ab/not-an-oid"),
        Err(StorageError::BadKey { .. })
    ));
}

#[test]
fn the_shared_storage_conformance_suites_pass_over_http() {
    let server = Server::start(&[]);
    let remote = server.client(Some(TOKEN));
    czcache::storage::conformance::object_write_suite(&remote);
    czcache::storage::conformance::object_race_suite(&remote);
    czcache::storage::conformance::object_batch_suite(&remote);
    czcache::storage::conformance::keyed_write_suite(&remote);
    czcache::storage::conformance::keyed_race_suite(&remote);
    czcache::storage::conformance::pack_suite(&|| server.client(Some(TOKEN)));
    czcache::storage::conformance::chunk_suite(&|| server.client(Some(TOKEN)));
}

#[test]
fn czc_serve_answers_objects_that_clients_pushed_in_packs() {
    use czcache::packs::{PackWrites, Packed};
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let packing = Packed::new(server.client(Some(TOKEN)), PackWrites::Packs, None);
    let items: Vec<(String, std::path::PathBuf, Vec<u8>)> = (0..20u64)
        .map(|n| {
            let content = bytes(200 + n, 3000 + n as usize);
            let path = dir.path().join(format!("o{n}"));
            fs::write(&path, &content).unwrap();
            (Oid::of_bytes(&content).object_key(), path, content)
        })
        .collect();
    let pairs: Vec<(String, std::path::PathBuf)> = items
        .iter()
        .map(|(k, p, _)| (k.clone(), p.clone()))
        .collect();
    let results = packing.put_many_if_absent(&pairs, &czcache::report::Counter::default());
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(!server.folder.join("objects").exists(), "all packed");

    // A client that knows nothing of packs (an older czc, curl) gets each object by
    // `/objects/`, whole or by range, and the server's existence answers count them.
    let plain = server.client(Some(TOKEN));
    let (key, _, content) = &items[7];
    let out = dir.path().join("out");
    assert_eq!(
        plain.copy_to(key, &out).unwrap(),
        Some(content.len() as u64)
    );
    assert_eq!(&fs::read(&out).unwrap(), content);
    assert_eq!(plain.size(key).unwrap(), Some(content.len() as u64));
    let keys: Vec<String> = items.iter().map(|(k, _, _)| k.clone()).collect();
    assert!(plain.exists_many(&keys).unwrap().iter().all(|found| *found));
    let answer = reqwest::blocking::Client::new()
        .get(format!("{}/{key}", server.url))
        .bearer_auth(TOKEN)
        .header("range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 206);
    assert_eq!(
        answer.headers()["content-range"],
        format!("bytes 100-199/{}", content.len()).as_str()
    );
    assert_eq!(answer.bytes().unwrap().to_vec(), content[100..200].to_vec());

    // A pack cut short on the server's disk serves no other object's bytes.
    let pack = fs::read_dir(server.folder.join("packs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "pack"))
        .unwrap();
    let (last, _, _) = items
        .iter()
        .max_by_key(|(k, _, _)| {
            packing
                .pack_locations(&[czcache::storage::object_key_oid(k).unwrap()])
                .unwrap()[0]
                .as_ref()
                .unwrap()
                .offset
        })
        .unwrap();
    let size = fs::metadata(&pack).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(size - 10)
        .unwrap();
    let answer = reqwest::blocking::Client::new()
        .get(format!("{}/{last}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 500);
}

#[test]
fn keys_over_czc_serve_are_checked_and_kept_inside_the_served_folder() {
    let server = Server::start(&[]);
    let remote = server.client(Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.csv");
    fs::write(&file, b"a,b\n1,2\n").unwrap();
    remote.put("runs/7/odd name #1.csv", &file).unwrap();
    assert_eq!(
        remote.hash("runs/7/odd name #1.csv").unwrap(),
        Some(Oid::of_bytes(b"a,b\n1,2\n"))
    );
    assert_eq!(
        remote.list("runs/").unwrap(),
        vec!["runs/7/odd name #1.csv"]
    );
    let client = reqwest::blocking::Client::new();
    let send = |method: reqwest::Method, path: &str, body: &'static [u8], oid: Option<&str>| {
        let mut request = client
            .request(method, format!("{}/{path}", server.url))
            .bearer_auth(TOKEN)
            .body(body);
        if let Some(oid) = oid {
            request = request.header("x-czc-oid", oid);
        }
        request.send().unwrap().status().as_u16()
    };
    // Bytes that are not what the client says they are: 422, nothing stored.
    let lie = Oid::of_bytes(b"something else").to_string();
    assert_eq!(
        send(reqwest::Method::PUT, "keys/runs/lie.csv", b"x", Some(&lie)),
        422
    );
    assert!(!remote.exists("runs/lie.csv").unwrap());
    // Conditions that are not oids: 400, nothing written or deleted.
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let answer = client
            .request(
                method,
                format!("{}/keys/runs/7/odd%20name%20%231.csv", server.url),
            )
            .bearer_auth(TOKEN)
            .header("if-match", "md5:abc")
            .body(&b"x"[..])
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 400);
        assert!(answer.text().unwrap().contains("If-Match is not an oid"));
    }
    assert_eq!(
        remote.hash("runs/7/odd name #1.csv").unwrap(),
        Some(Oid::of_bytes(b"a,b\n1,2\n"))
    );
    // Paths out of the folder, objects, and the server's own files are not keys.
    for path in [
        "keys/..%2F..%2Fescape",
        "keys/runs/%2E%2E/%2E%2E/escape",
        "keys/objects/ab/cd",
        "keys/.czc-serve-tmp/x",
        "keys/runs//double",
    ] {
        let answer = send(reqwest::Method::PUT, path, b"x", None);
        assert!(answer == 400 || answer == 404, "{path}: {answer}");
    }
    assert!(!server.folder.parent().unwrap().join("escape").exists());
    assert!(!server.folder.join("escape").exists());
    // No token, no write; reads need one too (no --public-read).
    let anonymous = server.client(None);
    assert!(anonymous.put("runs/anon.csv", &file).is_err());
    assert!(anonymous.exists("runs/7/odd name #1.csv").is_err());
}

#[test]
fn the_remote_round_trip_passes_over_czc_serve() {
    let server = Server::start(&[]);
    let config = format!(
        "[remote]\ndefault = \"team\"\n\n[remotes.team]\nurl = \"{}\"\n",
        server.url
    );
    crate::util::remote_round_trip(&config, &|env| env.with_env("CZC_REMOTE_TEAM_TOKEN", TOKEN));
}

#[test]
fn push_and_pull_through_czc_serve_with_a_token() {
    let server = Server::start(&[]);
    let env = TestEnv::new().with_env("CZC_REMOTE_LAB_TOKEN", TOKEN);
    env.write(
        ".czcache.toml",
        format!(
            "[remote]\ndefault = \"lab\"\n[remotes.lab]\nurl = \"{}\"\n",
            server.url
        ),
    );
    env.write("data/big.bin", bytes(7, 2_500_000));
    env.write("data/set/x.txt", "x");
    env.czc()
        .args(["save", "data/big.bin", "data/set"])
        .assert()
        .success();
    env.czc()
        .arg("push")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("pushed 3 objects"));

    let other = TestEnv::new().with_env("CZC_REMOTE_LAB_TOKEN", TOKEN);
    other.write(".czcache.toml", env.read(".czcache.toml"));
    other.write("data/big.bin.czc", env.read("data/big.bin.czc"));
    other.write("data/set.czc", env.read("data/set.czc"));
    other.czc().arg("pull").assert().success();
    assert_eq!(other.read("data/big.bin"), bytes(7, 2_500_000));
    assert_eq!(other.read("data/set/x.txt"), b"x");

    // Without the token, the server refuses and the client says what to set.
    let stranger = TestEnv::new();
    stranger.write(".czcache.toml", env.read(".czcache.toml"));
    stranger.write("data/big.bin.czc", env.read("data/big.bin.czc"));
    let out = stranger.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("set CZC_REMOTE_LAB_TOKEN"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_requests_are_refused_and_store_nothing() {
    let server = Server::start(&["--max-upload", "1KiB"]);
    let http = reqwest::blocking::Client::new();
    let content = b"small object";
    let oid = Oid::of_bytes(content);
    let url = format!("{}/{}", server.url, oid.object_key());

    let no_token = http.put(&url).body(content.to_vec()).send().unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = http
        .put(&url)
        .bearer_auth("nope")
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        http.get(&url).send().unwrap().status(),
        401,
        "reads need a token too"
    );

    let mismatch = http
        .put(&url)
        .bearer_auth(TOKEN)
        .body(b"other bytes".to_vec())
        .send()
        .unwrap();
    assert_eq!(mismatch.status(), 422);
    assert!(!server.folder.join(oid.object_key()).exists());

    let big = bytes(3, 4096);
    let big_url = format!("{}/{}", server.url, Oid::of_bytes(&big).object_key());
    let too_big = http
        .put(&big_url)
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .unwrap();
    assert_eq!(too_big.status(), 413);

    for bad in [
        "/objects/zz/not-hex",
        "/objects/ab/cd",
        "/objects/../../etc/passwd",
        "/objects/..%2F..%2Fetc/passwd",
    ] {
        let response = http
            .put(format!("{}{bad}", server.url))
            .bearer_auth(TOKEN)
            .body(content.to_vec())
            .send()
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{bad}: {}",
            response.status()
        );
    }

    // A good upload, then a range read.
    let ok = http
        .put(&url)
        .bearer_auth(TOKEN)
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 201);
    let part = http
        .get(&url)
        .bearer_auth(TOKEN)
        .header("range", "bytes=6-11")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().unwrap().as_ref(), b"object");
    let beyond = http
        .get(&url)
        .bearer_auth(TOKEN)
        .header("range", "bytes=100-")
        .send()
        .unwrap();
    assert_eq!(beyond.status(), 416);

    // Nothing but the one good object ever reached the served folder.
    let files: Vec<_> = walk(&server.folder);
    assert_eq!(
        files,
        vec![server.folder.join(oid.object_key())],
        "{files:?}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".czc-serve-tmp") {
                continue; // the server's own staging
            }
            if path.is_dir() {
                out.extend(walk(&path));
            } else if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".czc-storage")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_truncated_upload_stores_nothing_and_sigterm_stops_cleanly() {
    let mut server = Server::start(&[]);
    let content = bytes(9, 100_000);
    let oid = Oid::of_bytes(&content);
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "PUT /{} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        oid.object_key(),
        content.len()
    )
    .unwrap();
    stream.write_all(&content[..10_000]).unwrap();
    // The client dies mid-body.
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(walk(&server.folder).is_empty(), "no partial object");
    // The server is still healthy after that.
    let remote = server.client(Some(TOKEN));
    let scratch = tempfile::tempdir().unwrap();
    let (file, good) = object_file(scratch.path(), "f", &content);
    remote.put(&good.object_key(), &file).unwrap();
    assert!(remote.exists(&good.object_key()).unwrap());
    assert!(server.stop(), "SIGTERM ends the server with exit 0");
}

#[test]
fn concurrent_uploads_of_one_object_all_succeed_once() {
    let server = Server::start(&[]);
    let content = bytes(11, 300_000);
    let oid = Oid::of_bytes(&content);
    let url = format!("{}/{}", server.url, oid.object_key());
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                let content = content.clone();
                scope.spawn(move || {
                    reqwest::blocking::Client::new()
                        .put(url)
                        .bearer_auth(TOKEN)
                        .body(content)
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201));
    assert_eq!(
        fs::read(server.folder.join(oid.object_key())).unwrap(),
        content
    );
}

#[test]
fn public_read_lets_anyone_read_but_not_write() {
    let server = Server::start(&["--public-read"]);
    let writer = server.client(Some(TOKEN));
    let scratch = tempfile::tempdir().unwrap();
    let (file, oid) = object_file(scratch.path(), "p", b"public data");
    writer.put(&oid.object_key(), &file).unwrap();
    let anonymous = server.client(None);
    let dest = scratch.path().join("out");
    assert_eq!(
        anonymous.copy_to(&oid.object_key(), &dest).unwrap(),
        Some(11)
    );
    let (file2, oid2) = object_file(scratch.path(), "q", b"not allowed");
    let err = anonymous.put(&oid2.object_key(), &file2).unwrap_err();
    assert!(err.to_string().contains("unauthorized"), "{err}");
}

// ---- hostile clients (issue 9, C10) ----

/// A list request sent from a chosen loopback address (127.0.0.0/8 is all ours).
fn answer_from(source: &str, url: &str) -> Result<u16, String> {
    let client = reqwest::blocking::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    client
        .get(format!("{url}/list?prefix=objects/"))
        .bearer_auth(TOKEN)
        .send()
        .map(|response| response.status().as_u16())
        .map_err(|err| err.to_string())
}

/// Whether the server closes `stream` (read returns 0 or an error) within `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err)
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn idle_and_slow_header_clients_cannot_lock_others_out() {
    let server = Server::start(&["--header-timeout", "1s", "--max-connections-per-ip", "20"]);
    let address = server.url.trim_start_matches("http://").to_string();
    // 300 sockets from one address: idle ones, and ones that dribble a header.
    let mut idle: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    let mut slow: Vec<std::net::TcpStream> = (0..150)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            let _ = stream.write_all(b"GET /objects/ab/");
            stream
        })
        .collect();
    // Another user is served at once.
    assert_eq!(answer_from("127.0.0.2", &server.url), Ok(200));
    // The flood's sockets are all closed: over the per-address limit at once, the rest
    // when their header time is up.
    for stream in idle.iter_mut().chain(slow.iter_mut()) {
        assert!(closed_within(stream, std::time::Duration::from_secs(10)));
    }
    // And the flooding address itself is served again afterwards.
    assert_eq!(answer_from("127.0.0.1", &server.url), Ok(200));
}

#[test]
fn list_outside_objects_is_400_and_unknown_routes_404_without_server_paths() {
    let server = Server::start(&[]);
    let client = reqwest::blocking::Client::new();
    for prefix in ["objects/../..", "objects/../../etc", "../x", "objects/./a"] {
        let response = client
            .get(format!("{}/list", server.url))
            .query(&[("prefix", prefix)])
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{prefix}");
        let body = response.text().unwrap();
        assert!(!body.contains(&*server.folder.to_string_lossy()), "{body}");
        assert!(!body.contains("/tmp"), "{body}");
    }
    let response = client
        .get(format!("{}/no/such/route", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(response.text().unwrap().contains("/objects/"));
}

#[test]
fn sigterm_waits_a_bounded_grace_for_stalled_uploads_and_staging_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let args = [
        "serve",
        "served",
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        "tokens",
        "--shutdown-grace",
        "1s",
        "--body-timeout",
        "60s",
    ];
    let staging = dir.path().join("served/.czc-serve-tmp");
    let stalled_upload = |url: &str| {
        let address = url.trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let content = bytes(21, 4_000_000);
        write!(
            stream,
            "PUT /{} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
            Oid::of_bytes(&content).object_key(),
            content.len()
        )
        .unwrap();
        stream.write_all(&content[..1_000_000]).unwrap();
        stream
    };
    let leftovers = || {
        walkdir::WalkDir::new(&staging)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count()
    };
    // Waits (bounded) until the upload has reached the staging folder.
    let wait_for_upload = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while leftovers() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // A server killed mid-upload leaves its staging behind...
    let (mut killed, url) = crate::util::spawn_serve(dir.path(), &args, &[]);
    let _held = stalled_upload(&url);
    wait_for_upload();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let dead: Vec<PathBuf> = fs::read_dir(&staging)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers() >= 2,
        "the killed server left its upload and lock"
    );
    // ...which the next start sweeps; SIGTERM then ends even a stalled upload.
    let (mut child, url) = crate::util::spawn_serve(dir.path(), &args, &[]);
    let _stalled = stalled_upload(&url);
    wait_for_upload();
    assert!(
        dead.iter().all(|p| !p.exists()),
        "the dead server's staging was swept"
    );
    assert_eq!(leftovers(), 2, "only the live server's lock and upload");
    let started = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(leftovers(), 0, "nothing left in staging");
    assert!(
        walk(&dir.path().join("served")).is_empty(),
        "no partial object"
    );
}
