//! The S3 backend against a real S3-compatible server on 127.0.0.1 (`s3server`: s3s +
//! s3s-fs, signatures checked): the shared conformance suites, anonymous access to a
//! public bucket, a missing bucket, wrong credentials, multipart, 16-writer races, and
//! czc end to end with an S3 remote.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;

use crate::s3server::proxy::{Fault, FaultProxy};
use crate::s3server::{S3Server, PUBLIC_BUCKET};
use crate::util::{bytes, stderr, TestEnv};
use czcache::oid::Oid;
use czcache::storage::conformance;
use czcache::storage::{
    open_storage, OpenedStorage, ReadStorage, S3Storage, StorageError, StorageOptions,
    WriteStorage, MULTIPART_THRESHOLD,
};
use predicates::prelude::*;
use std::time::Duration;

fn options(server: &S3Server, anonymous: bool) -> StorageOptions {
    StorageOptions {
        endpoint: Some(server.endpoint.clone()),
        anonymous,
        aws_env: Some(
            server
                .credentials()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        ),
        ..StorageOptions::default()
    }
}

fn signed(server: &S3Server, url: &str) -> S3Storage {
    S3Storage::new(url, &options(server, false)).unwrap()
}

fn io_error(result: Result<impl std::fmt::Debug, StorageError>) -> (ErrorKind, String) {
    match result {
        Err(StorageError::Io { source, .. }) => (source.kind(), source.to_string()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn object_and_keyed_suites_pass_over_s3() {
    let server = S3Server::start(&["team"]);
    conformance::object_write_suite(&signed(&server, "s3://team/objects-suite"));
    conformance::object_race_suite(&signed(&server, "s3://team/race-suite"));
    conformance::object_batch_suite(&signed(&server, "s3://team/batch-suite"));
    let keyed = signed(&server, "s3://team/keyed/nested");
    conformance::keyed_write_suite(&keyed);
    conformance::keyed_race_suite(&keyed);
    // The prefix is honoured: the keys live under it in the bucket.
    assert!(server.root.join("team/keyed/nested/runs/ra/ce").is_file());
    conformance::pack_suite(&|| signed(&server, "s3://team/pack-suite"));
    conformance::chunk_suite(&|| signed(&server, "s3://team/chunk-suite"));
    // A bucket with no prefix works the same.
    let bare = S3Server::start(&["bare"]);
    conformance::object_write_suite(&signed(&bare, "s3://bare"));
}

#[test]
fn batch_uploads_work_from_inside_an_embedding_programs_runtime() {
    // A program already running tokio calls the blocking API from async code: the batch
    // must not try to block on the storage's own runtime there (tokio panics).
    let server = S3Server::start(&["team"]);
    let storage = signed(&server, "s3://team/embedded");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { conformance::object_batch_suite(&storage) });
}

#[test]
fn hash_comes_from_metadata_and_survives_foreign_uploads() {
    let server = S3Server::start(&["team"]);
    let storage = signed(&server, "s3://team/czc");
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("f");
    fs::write(&src, b"hashed by czc").unwrap();
    storage.put("objects/aa/bb", &src).unwrap();
    assert_eq!(
        storage.hash("objects/aa/bb").unwrap(),
        Some(Oid::of_bytes(b"hashed by czc"))
    );
    assert_eq!(storage.size("objects/aa/bb").unwrap(), Some(13));
    // An object written by another tool (no blake3 metadata) is hashed by download.
    let foreign = server.root.join("team/czc/other/file");
    fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    fs::write(&foreign, b"uploaded elsewhere").unwrap();
    assert_eq!(
        storage.hash("other/file").unwrap(),
        Some(Oid::of_bytes(b"uploaded elsewhere"))
    );
}

#[test]
fn big_objects_go_up_in_parts_and_come_back_whole() {
    let server = S3Server::start(&["team"]);
    let storage = signed(&server, "s3://team/czc");
    let scratch = tempfile::tempdir().unwrap();
    let content = bytes(7, (MULTIPART_THRESHOLD * 2 + 12345) as usize);
    let src = scratch.path().join("big");
    fs::write(&src, &content).unwrap();
    let key = Oid::of_bytes(&content).object_key();
    storage.put_if_absent(&key, &src).unwrap();
    let dest = scratch.path().join("back");
    assert_eq!(
        storage.copy_to(&key, &dest).unwrap(),
        Some(content.len() as u64)
    );
    assert!(fs::read(&dest).unwrap() == content, "same bytes back");
    assert_eq!(storage.hash(&key).unwrap(), Some(Oid::of_bytes(&content)));
    assert!(
        matches!(
            storage.put_if_absent(&key, &src),
            Err(StorageError::LostRace { .. })
        ),
        "a second put_if_absent of a big object loses"
    );
    // Three parts: S3's multipart ETag ends in "-3".
    assert_eq!(
        multipart_etag(&server, "team", &format!("czc/{key}")),
        Some(3)
    );
}

/// The part count of a multipart upload's ETag (`<md5>-<parts>`), read with a raw
/// signed HEAD through object_store.
fn multipart_etag(server: &S3Server, bucket: &str, path: &str) -> Option<u32> {
    use object_store::aws::AmazonS3Builder;
    use object_store::ObjectStoreExt;
    let store = AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(crate::s3server::ACCESS_KEY)
        .with_secret_access_key(crate::s3server::SECRET_KEY)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let meta = runtime
        .block_on(store.head(&object_store::path::Path::from(path)))
        .unwrap();
    let etag = meta.e_tag?;
    etag.trim_matches('"').rsplit_once('-')?.1.parse().ok()
}

#[test]
fn anonymous_reads_a_public_bucket_and_nothing_else() {
    let server = S3Server::start(&[PUBLIC_BUCKET, "team"]);
    let seeded = b"open data";
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("f");
    fs::write(&src, seeded).unwrap();
    let key = Oid::of_bytes(seeded).object_key();
    signed(&server, "s3://public/czc")
        .put_if_absent(&key, &src)
        .unwrap();
    signed(&server, "s3://team/czc")
        .put_if_absent(&key, &src)
        .unwrap();

    let public = S3Storage::new("s3://public/czc", &options(&server, true)).unwrap();
    conformance::object_read_suite(&public, seeded);
    // Writing without a signature is refused, and is not mistaken for a lost race.
    let other = scratch.path().join("g");
    fs::write(&other, b"vandalism").unwrap();
    let (kind, message) = io_error(public.put(&Oid::of_bytes(b"vandalism").object_key(), &other));
    assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
    // Another bucket refuses unsigned reads: an error, never a silent miss.
    let private = S3Storage::new("s3://team/czc", &options(&server, true)).unwrap();
    let (kind, message) = io_error(private.exists(&key));
    assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
    let (kind, _) = io_error(private.exists(&Oid::of_bytes(b"absent").object_key()));
    assert_eq!(kind, ErrorKind::PermissionDenied);

    // Opened from configuration as a read-only remote, it has no writer at all.
    let opened = open_storage(
        "s3://public/czc",
        &StorageOptions {
            read_only: true,
            ..options(&server, true)
        },
    )
    .unwrap();
    assert!(matches!(opened, OpenedStorage::ReadOnly(_)));
    assert!(opened.writer().is_none());
    assert!(opened.reader().exists(&key).unwrap());
}

#[test]
fn a_missing_bucket_is_an_error_not_a_miss() {
    let server = S3Server::start(&["team"]);
    let storage = signed(&server, "s3://no-such-bucket/czc");
    let key = Oid::of_bytes(b"x").object_key();
    let (kind, message) = io_error(storage.exists(&key));
    assert!(message.contains("bucket does not exist"), "{message}");
    assert_eq!(kind, ErrorKind::NotFound);
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("out");
    assert!(storage.copy_to(&key, &dest).is_err());
    assert!(!dest.exists());
    let src = scratch.path().join("f");
    fs::write(&src, b"x").unwrap();
    let err = storage.put(&key, &src).unwrap_err().to_string();
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(
        !server.root.join("no-such-bucket").exists(),
        "no bucket appears"
    );
}

#[test]
fn wrong_credentials_and_an_unreachable_server_are_errors_with_their_cause() {
    let server = S3Server::start(&["team"]);
    let mut wrong = options(&server, false);
    wrong.aws_env = Some(BTreeMap::from([
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            "czc-test-access".to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "not-the-secret".to_string(),
        ),
    ]));
    let storage = S3Storage::new("s3://team/czc", &wrong).unwrap();
    let key = Oid::of_bytes(b"x").object_key();
    let (kind, message) = io_error(storage.exists(&key));
    assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
    assert!(message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("f");
    fs::write(&src, b"x").unwrap();
    assert!(storage.put(&key, &src).is_err());
    assert!(fs::read_dir(server.root.join("team"))
        .unwrap()
        .next()
        .is_none());

    // A closed port: refused, reported, not a miss.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut closed = options(&server, false);
    closed.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let storage = S3Storage::new("s3://team/czc", &closed).unwrap();
    let err = storage.exists(&key).unwrap_err().to_string();
    assert!(err.contains("s3 remote s3://team/czc"), "{err}");
}

fn s3_config(server: &S3Server) -> String {
    format!(
        "[remote]\ndefault = \"team\"\n\n[remotes.team]\nurl = \"s3://team/czc\"\nendpoint = \"{}\"\n",
        server.endpoint
    )
}

fn with_credentials(env: TestEnv, server: &S3Server) -> TestEnv {
    server
        .credentials()
        .into_iter()
        .fold(env, |env, (key, value)| env.with_env(key, value))
}

#[test]
fn the_remote_round_trip_passes_over_s3() {
    let server = S3Server::start(&["team"]);
    crate::util::remote_round_trip(&s3_config(&server), &|env| with_credentials(env, &server));
}

#[test]
fn push_and_pull_through_a_chain_ending_in_s3() {
    let server = S3Server::start(&["team"]);
    let env = with_credentials(TestEnv::new(), &server);
    env.write(".czcache.toml", s3_config(&server));
    env.write("data/model.bin", bytes(1, 300_000));
    env.write(
        "data/big.bin",
        bytes(3, (MULTIPART_THRESHOLD + 100) as usize),
    );
    env.write("data/set/a.txt", "alpha");
    env.czc()
        .args(["save", "data/model.bin", "data/big.bin", "data/set"])
        .assert()
        .success();
    env.czc()
        .arg("push")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("pushed 4 objects"));
    env.czc().arg("push").assert().success().stdout(
        predicate::str::starts_with("pushed 0 objects")
            .and(predicate::str::contains("4 already there")),
    );
    env.czc()
        .args(["status", "--remote"])
        .assert()
        .success()
        .stdout(predicate::str::contains("not-pushed").not());

    // A second clone: a folder share holding a corrupt model first, an unreachable
    // remote, then the bucket.
    let oid = env.marker_oid("data/model.bin.czc");
    let hex = &oid["blake3:".len()..];
    let share = env.dir.path().join("share");
    fs::create_dir_all(share.join("objects").join(&hex[..2])).unwrap();
    fs::write(
        share.join("objects").join(&hex[..2]).join(&hex[2..]),
        b"tampered",
    )
    .unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let other = with_credentials(TestEnv::new(), &server);
    other.write(
        ".czcache.toml",
        format!(
            "[remote]\nread = [\"share\", \"down\", \"team\"]\n\n[remotes.share]\nurl = \"{}\"\nread_only = true\n\n[remotes.down]\nurl = \"s3://team/czc\"\nendpoint = \"http://127.0.0.1:{port}\"\n\n[remotes.team]\nurl = \"s3://team/czc\"\nendpoint = \"{}\"\nread_only = true\n",
            share.display(),
            server.endpoint
        ),
    );
    for marker in ["data/model.bin.czc", "data/big.bin.czc", "data/set.czc"] {
        other.write(marker, env.read(marker));
    }
    let out = other.czc().arg("pull").output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("remote share holds corrupt bytes"), "{err}");
    assert!(err.contains("remote down failed"), "{err}");
    assert_eq!(other.read("data/model.bin"), bytes(1, 300_000));
    assert_eq!(
        other.read("data/big.bin"),
        bytes(3, (MULTIPART_THRESHOLD + 100) as usize)
    );
    assert_eq!(other.read("data/set/a.txt"), b"alpha");
}

#[test]
fn get_put_and_rm_work_on_bucket_keys() {
    let server = S3Server::start(&["team"]);
    let env = with_credentials(TestEnv::new(), &server);
    env.write(".czcache.toml", s3_config(&server));
    env.write("weights.bin", bytes(4, 20_000));
    env.czc()
        .args(["put", "team:models/w.bin", "weights.bin", "--if-absent"])
        .assert()
        .success();
    env.czc()
        .args(["put", "team:models/w.bin", "weights.bin", "--if-absent"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("changed by someone else"));
    let out = env
        .czc()
        .args(["get", "team:models/w.bin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8(out.stdout).unwrap();
    assert_eq!(fs::read(path.trim()).unwrap(), bytes(4, 20_000));
    let stale = Oid::of_bytes(b"stale");
    env.czc()
        .args(["rm", "team:models/w.bin", "--if-match", &stale.to_string()])
        .assert()
        .code(1);
    let current = Oid::of_bytes(&bytes(4, 20_000));
    env.czc()
        .args([
            "rm",
            "team:models/w.bin",
            "--if-match",
            &current.to_string(),
        ])
        .assert()
        .success();
    assert!(!server.root.join("team/czc/models/w.bin").exists());
}

#[test]
fn czc_serve_fronts_an_s3_bucket() {
    let server = S3Server::start(&["team"]);
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(".czcache.toml"),
        format!(
            "[remotes.bucket]\nurl = \"s3://team/lab\"\nendpoint = \"{}\"\n",
            server.endpoint
        ),
    )
    .unwrap();
    fs::write(dir.path().join("tokens"), "lab-token\n").unwrap();
    let (child, url) = crate::util::spawn_serve(
        dir.path(),
        &[
            "serve",
            "bucket",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens",
        ],
        &server.credentials(),
    );
    let _server = crate::util::KillOnDrop(child);
    let remote = czcache::storage::HttpStorage::new(&url, Some("lab-token".into())).unwrap();
    conformance::object_write_suite(&remote);
    conformance::object_race_suite(&remote);
    // What went through the server is in the bucket, hashed in its metadata.
    let scratch = tempfile::tempdir().unwrap();
    let content = bytes(9, 70_000);
    let src = scratch.path().join("f");
    fs::write(&src, &content).unwrap();
    let key = Oid::of_bytes(&content).object_key();
    remote.put_if_absent(&key, &src).unwrap();
    assert_eq!(remote.size(&key).unwrap(), Some(70_000));
    let bucket = signed(&server, "s3://team/lab");
    assert_eq!(bucket.hash(&key).unwrap(), Some(Oid::of_bytes(&content)));
}

#[test]
fn czc_serve_reads_no_more_from_its_backend_than_the_object_holds() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(".czcache.toml"),
        format!(
            "[remotes.bucket]\nurl = \"s3://team/lab\"\nendpoint = \"{}\"\n",
            proxy.endpoint
        ),
    )
    .unwrap();
    fs::write(dir.path().join("tokens"), "lab-token\n").unwrap();
    let (child, url) = crate::util::spawn_serve(
        dir.path(),
        &[
            "serve",
            "bucket",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens",
        ],
        &server.credentials(),
    );
    let _server = crate::util::KillOnDrop(child);
    let scratch = tempfile::tempdir().unwrap();
    let content = bytes(10, 30_000);
    let src = scratch.path().join("f");
    fs::write(&src, &content).unwrap();
    let key = Oid::of_bytes(&content).object_key();
    signed(&server, "s3://team/lab")
        .put_if_absent(&key, &src)
        .unwrap();
    // The backend sends 1 MB more than the object holds: refused, not passed on.
    proxy.inject("GET", &key, 10, Fault::PadBy(1 << 20));
    let client = reqwest::blocking::Client::new();
    let answer = client
        .get(format!("{url}/{key}"))
        .bearer_auth("lab-token")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 502);
    proxy.clear();
    let answer = client
        .get(format!("{url}/{key}"))
        .bearer_auth("lab-token")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.bytes().unwrap().to_vec(), content);
}

#[test]
fn bad_s3_settings_fail_with_one_line_naming_the_remote() {
    let server = S3Server::start(&["team"]);
    let env = TestEnv::new()
        .with_env("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY)
        .with_env("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    env.write(".czcache.toml", s3_config(&server));
    env.write("a.bin", bytes(5, 1000));
    env.czc().args(["save", "a.bin"]).assert().success();
    let out = env.czc().arg("push").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("czc: error:") && err.contains("s3://team/czc"),
        "{err}"
    );
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(fs::read_dir(server.root.join("team"))
        .unwrap()
        .next()
        .is_none());

    // A bucket that does not exist: named as such, nothing created.
    let env = with_credentials(TestEnv::new(), &server);
    env.write(
        ".czcache.toml",
        format!(
            "[remotes.team]\nurl = \"s3://missing/czc\"\nendpoint = \"{}\"\n",
            server.endpoint
        ),
    );
    env.write("a.bin.czc", {
        let other = with_credentials(TestEnv::new(), &server);
        other.write("a.bin", bytes(5, 1000));
        other.czc().args(["save", "a.bin"]).assert().success();
        other.read("a.bin.czc")
    });
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bucket does not exist"), "{err}");
    assert!(!server.root.join("missing").exists());
    assert!(!env.path("a.bin").exists());

    // No credentials at all (off EC2): said plainly, not as a metadata-service failure.
    let bare = TestEnv::new();
    bare.write(".czcache.toml", s3_config(&server));
    bare.write("a.bin", bytes(5, 1000));
    bare.czc().args(["save", "a.bin"]).assert().success();
    let out = bare
        .czc()
        .arg("push")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        // A closed port stands in for the metadata service, whatever this machine has.
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");

    // A url with no bucket is bad configuration.
    env.write(".czcache.toml", "[remotes.team]\nurl = \"s3://\"\n");
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no bucket name"), "{}", stderr(&out));
}

#[test]
fn an_overwrite_within_the_same_second_is_seen_by_get_and_put_updates_the_local_copy() {
    let server = S3Server::start(&["team"]);
    let a = with_credentials(TestEnv::new(), &server);
    let b = with_credentials(TestEnv::new(), &server);
    for env in [&a, &b] {
        env.write(".czcache.toml", s3_config(&server));
    }
    let get = |env: &TestEnv| {
        let out = env.czc().args(["get", "team:keys/k1"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        fs::read(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
    };
    // Five rewrites, each well within one second of the previous read.
    for round in 0..5u64 {
        b.write("v.bin", bytes(100 + round, 5000));
        b.czc()
            .args(["put", "team:keys/k1", "v.bin"])
            .assert()
            .success();
        assert_eq!(get(&a), bytes(100 + round, 5000), "round {round}");
        // The writer's own next get is a local hit on what it wrote.
        let out = b
            .czc()
            .args(["--json", "get", "team:keys/k1"])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["downloaded"], false, "round {round}");
        assert_eq!(
            fs::read(json["path"].as_str().unwrap()).unwrap(),
            bytes(100 + round, 5000)
        );
    }
}

#[test]
fn conditional_writes_of_big_keys_are_refused_not_raced() {
    let server = S3Server::start(&["team"]);
    let env = with_credentials(TestEnv::new(), &server);
    env.write(".czcache.toml", s3_config(&server));
    let big = (MULTIPART_THRESHOLD + 1000) as usize;
    env.write("v1.bin", bytes(61, big));
    env.write("v2.bin", bytes(62, big));
    env.czc()
        .args(["put", "team:keys/big.bin", "v1.bin"])
        .assert()
        .success();
    let v1 = Oid::of_bytes(&bytes(61, big));
    // v2 is newer than the stored copy, so --if-newer would really write.
    fs::File::options()
        .write(true)
        .open(env.path("v2.bin"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    for condition in [
        &["--if-match", &v1.to_string()][..],
        &["--if-absent"][..],
        &["--if-newer"][..],
    ] {
        let out = env
            .czc()
            .args(["put", "team:keys/big.bin", "v2.bin"])
            .args(condition)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{condition:?}");
        let err = stderr(&out);
        assert!(
            err.contains("cannot be made safe") || err.contains("changed by someone else"),
            "{condition:?}: {err}"
        );
        assert!(err.contains("nothing was written"), "{err}");
    }
    let stored = fs::read(server.root.join("team/czc/keys/big.bin")).unwrap();
    assert_eq!(Oid::of_bytes(&stored), v1, "the key still holds v1");
}

#[test]
fn a_multipart_upload_counts_its_bytes_as_the_parts_land() {
    let server = S3Server::start(&["team"]);
    let storage = signed(&server, "s3://team/czc");
    let scratch = tempfile::tempdir().unwrap();
    let content = bytes(8, (MULTIPART_THRESHOLD * 2 + 999) as usize);
    let src = scratch.path().join("big");
    fs::write(&src, &content).unwrap();
    let key = Oid::of_bytes(&content).object_key();
    /// Keeps every byte report, to see that they come part by part.
    #[derive(Default)]
    struct Reports {
        bytes: std::sync::Mutex<Vec<u64>>,
        files: std::sync::atomic::AtomicU64,
    }
    impl czcache::report::Progress for Reports {
        fn add_work(&self, _files: u64, _bytes: u64) {}
        fn bytes_done(&self, bytes: u64) {
            self.bytes.lock().unwrap().push(bytes);
        }
        fn files_done(&self, files: u64) {
            self.files
                .fetch_add(files, std::sync::atomic::Ordering::Relaxed);
        }
        fn finish(&self) {}
    }
    let heard = Reports::default();
    let results = storage.put_many_if_absent(&[(key.clone(), src)], &heard);
    assert!(results.into_iter().all(|r| r.is_ok()));
    assert_eq!(heard.files.into_inner(), 1, "one file done, at the end");
    let reports = heard.bytes.into_inner().unwrap();
    let nonzero: Vec<u64> = reports.iter().copied().filter(|b| *b > 0).collect();
    assert!(
        nonzero.len() >= 3,
        "one report per part, not one at the end: {reports:?}"
    );
    assert_eq!(reports.iter().sum::<u64>(), content.len() as u64);
}

// ---- Faults injected between czc and the S3 server (tests/s3server/proxy.rs) ----

/// A project whose `team` remote is the bucket seen through `proxy`.
fn through(proxy: &FaultProxy, server: &S3Server) -> TestEnv {
    let env = with_credentials(TestEnv::new(), server);
    env.write(
        ".czcache.toml",
        format!(
            "[remote]\ndefault = \"team\"\n\n[remotes.team]\nurl = \"s3://team/czc\"\nendpoint = \"{}\"\n",
            proxy.endpoint
        ),
    );
    env
}

/// `through`, with pushes writing loose objects (`packs = false`), as before packs.
fn through_loose(proxy: &FaultProxy, server: &S3Server) -> TestEnv {
    let env = through(proxy, server);
    let config = env.read(".czcache.toml");
    env.write(
        ".czcache.toml",
        [config, b"packs = false\n".to_vec()].concat(),
    );
    env
}

fn czc_get(env: &TestEnv, key: &str) -> std::process::Output {
    env.czc().args(["get", key]).output().unwrap()
}

#[test]
fn get_refuses_a_flipped_byte_or_a_short_body_and_keeps_nothing() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    let content = bytes(21, 50_000);
    env.write("k1.bin", &content);
    env.czc()
        .args(["put", "team:keys/k1", "k1.bin"])
        .assert()
        .success();
    // A reader with an empty cache of its own.
    let reader = through(&proxy, &server);
    // Damaged every time: refused (one retry, as for a key rewritten mid-read).
    for fault in [Fault::FlipByte, Fault::ShortBy(5)] {
        proxy.inject("GET", "/team/czc/keys/k1", 5, fault.clone());
        let out = czc_get(&reader, "team:keys/k1");
        assert_eq!(out.status.code(), Some(1), "{fault:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{fault:?}: no path printed");
        let message = stderr(&out);
        assert!(
            message.contains("keys/k1") && message.lines().count() == 1,
            "{fault:?}: one line naming the key: {message}"
        );
        assert!(
            reader.cached_objects().is_empty(),
            "{fault:?}: nothing kept"
        );
    }
    assert!(proxy.applied().len() >= 4, "{:?}", proxy.applied());
    proxy.clear();
    // Damaged once: the retry's bytes are checked and served.
    proxy.inject("GET", "/team/czc/keys/k1", 1, Fault::FlipByte);
    let out = czc_get(&reader, "team:keys/k1");
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8(out.stdout).unwrap();
    assert_eq!(fs::read(path.trim()).unwrap(), content);
}

#[test]
fn a_conditional_put_whose_write_landed_behind_a_5xx_reports_success() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    env.write("v1.bin", bytes(31, 4000));
    env.write("v2.bin", bytes(32, 4000));
    env.czc()
        .args(["put", "team:keys/k", "v1.bin"])
        .assert()
        .success();
    // The PUT reaches the server, its answer is replaced by a 503: the client retries
    // and its own write makes the retry's condition fail.
    proxy.inject("PUT", "/team/czc/keys/k", 1, Fault::StatusAfter(503));
    let v1 = Oid::of_bytes(&bytes(31, 4000)).to_string();
    let out = env
        .czc()
        .args(["put", "team:keys/k", "v2.bin", "--if-match", &v1])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proxy.applied().len(), 1);
    assert_eq!(
        fs::read(server.root.join("team/czc/keys/k")).unwrap(),
        bytes(32, 4000)
    );
    // A real lost race is still one: someone else's bytes there now.
    proxy.inject("PUT", "/team/czc/keys/k", 1, Fault::StatusAfter(503));
    env.write("v3.bin", bytes(33, 4000));
    let out = env
        .czc()
        .args(["put", "team:keys/k", "v3.bin", "--if-match", &v1])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        fs::read(server.root.join("team/czc/keys/k")).unwrap(),
        bytes(32, 4000)
    );
}

#[test]
fn rm_if_match_is_refused_when_the_store_reports_no_etag() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    env.write("w.bin", bytes(41, 3000));
    env.czc()
        .args(["put", "team:keys/w", "w.bin"])
        .assert()
        .success();
    proxy.inject("HEAD", "/team/czc/keys/w", 10, Fault::DropETag);
    let oid = Oid::of_bytes(&bytes(41, 3000)).to_string();
    let out = env
        .czc()
        .args(["rm", "team:keys/w", "--if-match", &oid])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ETag"), "{}", stderr(&out));
    assert!(server.root.join("team/czc/keys/w").exists(), "not deleted");
    assert_eq!(proxy.count("DELETE", "/team/czc/keys/w"), 0);
}

#[test]
fn a_push_survives_connection_resets_on_small_puts() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through_loose(&proxy, &server);
    for n in 0..4u64 {
        env.write(&format!("f{n}.bin"), bytes(50 + n, 2000));
    }
    env.czc()
        .args(["save", "f0.bin", "f1.bin", "f2.bin", "f3.bin"])
        .assert()
        .success();
    // One PUT dies before the server sees it, one after its write landed; both as
    // resets (RST), which object_store does not retry for a conditional PUT.
    proxy.inject("PUT", "/team/czc/objects/", 1, Fault::ResetBefore);
    proxy.inject("PUT", "/team/czc/objects/", 1, Fault::ResetAfter);
    let out = env.czc().arg("push").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proxy.applied().len(), 2, "{:?}", proxy.applied());
    for n in 0..4u64 {
        let oid = Oid::of_bytes(&bytes(50 + n, 2000));
        let key = oid.object_key();
        assert!(
            server.root.join("team/czc").join(&key).exists(),
            "{key} pushed"
        );
    }
}

#[test]
fn a_push_of_packs_survives_connection_resets_and_the_objects_read_back() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    for n in 0..4u64 {
        env.write(&format!("f{n}.bin"), bytes(50 + n, 2000));
    }
    env.czc()
        .args(["save", "f0.bin", "f1.bin", "f2.bin", "f3.bin"])
        .assert()
        .success();
    proxy.inject("PUT", ".pack", 1, Fault::ResetBefore);
    proxy.inject("PUT", ".pack", 1, Fault::ResetAfter);
    proxy.inject("PUT", ".idx", 1, Fault::ResetBefore);
    let out = env.czc().arg("push").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proxy.applied().len(), 3, "{:?}", proxy.applied());
    assert_eq!(proxy.count("PUT", "/team/czc/objects/"), 0, "all packed");
    // A fresh clone reads every object out of the pack.
    fs::remove_dir_all(&env.cache).unwrap();
    for n in 0..4u64 {
        fs::remove_file(env.path(&format!("f{n}.bin"))).unwrap();
    }
    env.czc().arg("pull").assert().success();
    for n in 0..4u64 {
        assert_eq!(env.read(&format!("f{n}.bin")), bytes(50 + n, 2000));
    }
}

#[test]
fn a_pull_rides_out_cut_bodies_and_5xx_and_refuses_a_flipped_byte() {
    pull_rides_out_faults(false, "/team/czc/objects/");
}

#[test]
fn a_pull_of_packed_objects_rides_out_cut_bodies_and_5xx_and_refuses_a_flipped_byte() {
    pull_rides_out_faults(true, ".pack");
}

fn pull_rides_out_faults(packs: bool, faulted: &str) {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = if packs {
        through(&proxy, &server)
    } else {
        through_loose(&proxy, &server)
    };
    env.write("data/a.bin", bytes(61, 200_000));
    env.write("data/b.bin", bytes(62, 200_000));
    env.czc().args(["save", "data"]).assert().success();
    env.czc().arg("push").assert().success();
    let reset = |env: &TestEnv| {
        fs::remove_dir_all(&env.cache).unwrap();
        fs::remove_dir_all(env.path("data")).unwrap();
    };
    reset(&env);
    proxy.inject("GET", faulted, 1, Fault::CutBody);
    proxy.inject("GET", faulted, 1, Fault::StatusBefore(503));
    let out = env.czc().arg("pull").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proxy.applied().len(), 2, "{:?}", proxy.applied());
    assert_eq!(env.read("data/a.bin"), bytes(61, 200_000));
    assert_eq!(env.read("data/b.bin"), bytes(62, 200_000));

    // A flipped byte is refused, named, and nothing damaged reaches the tree or cache.
    reset(&env);
    // A pack read that fails its hash is read again object by object: flip them all.
    proxy.inject("GET", faulted, if packs { 100 } else { 1 }, Fault::FlipByte);
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for path in ["data/a.bin", "data/b.bin"] {
        if let Ok(found) = fs::read(env.path(path)) {
            assert!(
                found == bytes(61, 200_000) || found == bytes(62, 200_000),
                "{path} holds only good bytes"
            );
        }
    }
    let leftovers: Vec<_> = walkdir::WalkDir::new(&env.project)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".czc-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    proxy.clear();
    env.czc().arg("pull").assert().success();
    assert_eq!(env.read("data/a.bin"), bytes(61, 200_000));
}

#[test]
fn a_big_loose_object_is_pulled_in_parallel_ranges_that_ride_out_faults_and_are_checked() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through_loose(&proxy, &server);
    let size = (40 << 20) + 12_345;
    let content = bytes(91, size);
    env.write("model.bin", &content);
    env.czc().args(["save", "model.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    let oid = Oid::of_bytes(&content);
    let object = format!("/team/czc/objects/{}/{}", &oid.hex()[..2], &oid.hex()[2..]);
    let reset = |env: &TestEnv| {
        fs::remove_dir_all(&env.cache).unwrap();
        let _ = fs::remove_file(env.path("model.bin"));
    };
    let object_gets = |proxy: &FaultProxy| {
        proxy
            .requests()
            .iter()
            .filter(|line| line.starts_with("GET ") && line.contains(&object))
            .count()
    };

    // Three 16 MiB ranges (one cut mid-body and read again) instead of one stream.
    reset(&env);
    proxy.clear();
    proxy.inject("GET", &object, 1, Fault::CutBody);
    let out = env.czc().arg("pull").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(object_gets(&proxy), 4, "{:?}", proxy.requests());
    assert!(env.read("model.bin") == content);

    // A flipped byte in every range read: the object does not hash to its oid, so
    // nothing is admitted or placed, and the failure names it.
    reset(&env);
    proxy.clear();
    proxy.inject("GET", &object, 100, Fault::FlipByte);
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&oid.to_string()), "{}", stderr(&out));
    assert!(!env.path("model.bin").exists());
    assert!(env.cached_objects().is_empty());
    proxy.clear();
    env.czc().arg("pull").assert().success();
    assert!(env.read("model.bin") == content);
}

#[test]
fn a_stalled_s3_server_times_out_naming_the_remote() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    env.write("k.bin", bytes(71, 1000));
    env.czc()
        .args(["put", "team:keys/k", "k.bin"])
        .assert()
        .success();
    let reader = through(&proxy, &server).with_env("CZC_TIMEOUT", "1s");
    proxy.inject(
        "",
        "/team/czc/keys/k",
        100,
        Fault::Delay(Duration::from_secs(30)),
    );
    let mut command = reader.czc_std();
    command.args(["get", "team:keys/k"]);
    let out = crate::util::output_within(command, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("team") && message.to_lowercase().contains("timed out"),
        "{message}"
    );
}

#[test]
fn a_failed_multipart_completion_is_aborted() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    env.write("big.bin", bytes(81, (MULTIPART_THRESHOLD + 5000) as usize));
    proxy.inject("POST", "uploadId=", 100, Fault::StatusBefore(500));
    let out = env
        .czc()
        .args(["put", "team:models/big.bin", "big.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(proxy.count("POST", "uploadId=") >= 1);
    assert!(
        proxy.count("DELETE", "uploadId=") >= 1,
        "{:?}",
        proxy.requests()
    );
    assert!(
        server.pending_uploads().is_empty(),
        "{:?}",
        server.pending_uploads()
    );
    assert!(!server.root.join("team/czc/models/big.bin").exists());
}

/// The bucket `team` through object_store directly, to leave uploads as a killed run would.
fn raw_store(server: &S3Server) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_bucket_name("team")
        .with_region("us-east-1")
        .with_access_key_id(crate::s3server::ACCESS_KEY)
        .with_secret_access_key(crate::s3server::SECRET_KEY)
        .build()
        .unwrap()
}

#[test]
fn push_aborts_stale_multipart_uploads_and_keeps_live_ones() {
    use object_store::multipart::MultipartStore;
    let server = S3Server::start(&["team"]);
    let env = with_credentials(TestEnv::new(), &server);
    env.write(".czcache.toml", s3_config(&server));
    let content = bytes(91, 3000);
    env.write("f.bin", &content);
    let shard = &Oid::of_bytes(&content).hex()[..2];
    // What a killed run left in the shard this push writes to, and a live upload.
    let store = raw_store(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let begin = |name: &str| {
        let path = object_store::path::Path::from(format!("czc/objects/{shard}/{name}"));
        runtime.block_on(store.create_multipart(&path)).unwrap()
    };
    begin("killed-1");
    begin("killed-2");
    begin("killed-3");
    server.backdate_uploads(Duration::from_secs(2 * 3600));
    let live = begin("live");
    assert_eq!(server.pending_uploads().len(), 4);
    env.czc().args(["save", "f.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    let left: Vec<String> = server
        .pending_uploads()
        .into_iter()
        .map(|upload| upload.upload_id)
        .collect();
    assert_eq!(left, vec![live], "only the live upload is left");
}

#[test]
fn a_lying_multipart_listing_aborts_nothing_and_fails_no_push() {
    use object_store::multipart::MultipartStore;
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    let content = bytes(93, 3000);
    env.write("f.bin", &content);
    let shard = &Oid::of_bytes(&content).hex()[..2];
    let store = raw_store(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let path = object_store::path::Path::from(format!("czc/objects/{shard}/killed"));
    runtime.block_on(store.create_multipart(&path)).unwrap();
    server.backdate_uploads(Duration::from_secs(2 * 3600));
    // Garbage, then a listing that names an upload outside the remote's prefix.
    proxy.inject(
        "GET",
        "uploads",
        1,
        Fault::ReplaceBody("<ListMultipartUploadsResult><Upload>"),
    );
    env.czc().args(["save", "f.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    assert_eq!(
        server.pending_uploads().len(),
        1,
        "nothing aborted on garbage"
    );
    proxy.inject(
        "GET",
        "uploads",
        1,
        Fault::ReplaceBody(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated><Upload><Key>elsewhere/x</Key><UploadId>u1</UploadId><Initiated>2000-01-01T00:00:00.000Z</Initiated></Upload></ListMultipartUploadsResult>",
        ),
    );
    env.write("g.bin", bytes(94, 3000));
    env.czc().args(["save", "g.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    assert_eq!(
        proxy.count("DELETE", "uploadId=u1"),
        0,
        "outside the prefix: left alone"
    );
    assert!(proxy.applied().len() >= 2, "{:?}", proxy.applied());
}

#[test]
fn a_push_that_finds_an_old_object_there_restarts_its_grace_period() {
    let server = S3Server::start(&["team"]);
    let first = with_credentials(TestEnv::new(), &server);
    first.write(".czcache.toml", s3_config(&server) + "packs = false\n");
    let content = bytes(95, 5000);
    first.write("f.bin", &content);
    first.czc().args(["save", "f.bin"]).assert().success();
    first.czc().arg("push").assert().success();
    let oid = Oid::of_bytes(&content);
    let stored = server.root.join("team/czc").join(oid.object_key());
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86400);
    fs::File::options()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    // Another clone saves the same bytes: its push finds the object there.
    let second = with_credentials(TestEnv::new(), &server);
    second.write(".czcache.toml", s3_config(&server) + "packs = false\n");
    second.write("g.bin", &content);
    second.czc().args(["save", "g.bin"]).assert().success();
    second
        .czc()
        .arg("push")
        .assert()
        .success()
        .stdout(predicate::str::contains("1 already there"));
    let age = fs::metadata(&stored)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default();
    assert!(age < Duration::from_secs(600), "refreshed: {age:?} old");
    assert_eq!(fs::read(&stored).unwrap(), content);
    // Its metadata (the hash czc reads back) survived the copy in place.
    let storage = signed(&server, "s3://team/czc");
    assert_eq!(storage.hash(&oid.object_key()).unwrap(), Some(oid));
}

#[test]
fn a_push_that_finds_objects_in_an_old_pack_marks_the_pack_seen() {
    let server = S3Server::start(&["team"]);
    let first = with_credentials(TestEnv::new(), &server);
    first.write(".czcache.toml", s3_config(&server));
    let content = bytes(96, 5000);
    first.write("f.bin", &content);
    first.czc().args(["save", "f.bin"]).assert().success();
    first.czc().arg("push").assert().success();
    let packs = server.root.join("team/czc/packs");
    let pack = fs::read_dir(&packs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "pack"))
        .expect("a pack");
    let seen = pack.with_extension("seen");
    assert!(!seen.exists(), "a new pack needs no mark");
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86400);
    fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let second = with_credentials(TestEnv::new(), &server);
    second.write(".czcache.toml", s3_config(&server));
    second.write("g.bin", &content);
    second.czc().args(["save", "g.bin"]).assert().success();
    second
        .czc()
        .arg("push")
        .assert()
        .success()
        .stdout(predicate::str::contains("1 already there"));
    assert!(seen.exists(), "the old pack is marked wanted again");
    // The pack itself is left as it was: packs never change.
    let age = fs::metadata(&pack)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap();
    assert!(age > Duration::from_secs(86400));
}

#[test]
fn the_cache_suites_pass_over_s3_and_a_plain_s3_url_needs_no_remote() {
    use czcache::caches::{conformance, SynchronizedRemoteAndLocalCache};
    use czcache::config::{CacheConfig, IndexKind, LinkKind};
    let server = S3Server::start(&["team"]);
    let dir = tempfile::tempdir().unwrap();
    let local = czcache::LocalCache::open(&CacheConfig {
        dir: dir.path().join("cache"),
        size_limit: 1 << 30,
        index: IndexKind::Sqlite,
        link: vec![LinkKind::Copy],
    })
    .unwrap();
    let bucket = std::sync::Arc::new(signed(&server, "s3://team/synced"));
    let cache = SynchronizedRemoteAndLocalCache::new(local, "team", bucket.clone());
    conformance::write_suite(&cache);
    let scratch = tempfile::tempdir().unwrap();
    conformance::read_suite(&cache, &|key, bytes| {
        let file = scratch.path().join("seed");
        fs::write(&file, bytes).unwrap();
        bucket.put(key, &file).unwrap();
    });
    // `czc get s3://…` with nothing configured: AWS_* settings only.
    let env = with_credentials(TestEnv::new(), &server)
        .with_env("AWS_ENDPOINT", server.endpoint.clone())
        .with_env("AWS_ALLOW_HTTP", "true");
    let out = env
        .czc()
        .args(["get", "s3://team/synced/data/cells.h5ad"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(path.trim().ends_with("cells.h5ad"), "{path}");
    assert_eq!(fs::read(path.trim()).unwrap(), b"second, longer version");
}

/// A big file whose middle can be rewritten: random bytes, `seed` picks them.
fn big_file(seed: u64, mib: usize) -> Vec<u8> {
    bytes(seed, mib << 20)
}

#[test]
fn a_big_object_goes_up_as_chunks_and_an_edit_sends_only_the_chunks_it_touched() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    let mut content = big_file(110, 40);
    env.write("model.bin", &content);
    env.czc().args(["save", "model.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    let oid = Oid::of_bytes(&content);
    let root = server.root.join("team/czc");
    assert!(root.join("recipes").join(oid.hex()).exists(), "a recipe");
    assert!(!root.join(oid.object_key()).exists(), "not loose");
    let (first_up, _) = proxy.bytes("PUT", "/packs/");
    assert!(first_up >= 40 << 20, "{first_up}");

    // 1 MiB rewritten in the middle: a few chunks go up, not 40 MiB.
    for byte in &mut content[20 << 20..21 << 20] {
        *byte = byte.wrapping_add(1);
    }
    env.write("model.bin", &content);
    env.czc().args(["save", "model.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    let (both_up, _) = proxy.bytes("PUT", "/packs/");
    let second_up = both_up - first_up;
    assert!(second_up <= 9 << 20, "the edit sent {second_up} bytes");
    assert!(second_up >= 1 << 20, "the edit sent {second_up} bytes");

    // A fresh clone assembles it, and both versions read back byte for byte.
    fs::remove_dir_all(&env.cache).unwrap();
    fs::remove_file(env.path("model.bin")).unwrap();
    env.czc().arg("pull").assert().success();
    assert!(env.read("model.bin") == content, "assembled right");
    let storage = czcache::storage::open_storage("s3://team/czc", &options(&server, false))
        .unwrap()
        .reader();
    let old = Oid::of_bytes(&big_file(110, 40));
    let out = env.dir.path().join("old.bin");
    assert_eq!(
        storage.copy_to(&old.object_key(), &out).unwrap(),
        Some(40 << 20)
    );
    assert!(fs::read(&out).unwrap() == big_file(110, 40));
    assert_eq!(storage.size(&old.object_key()).unwrap(), Some(40 << 20));
    assert!(storage.exists(&old.object_key()).unwrap());
}

#[test]
fn an_interrupted_push_or_pull_of_a_big_object_resumes_without_resending() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    let content = big_file(111, 40);
    env.write("model.bin", &content);
    env.czc().args(["save", "model.bin"]).assert().success();
    // The push dies before its recipe lands: its packs are there, the object is not.
    proxy.inject("PUT", "/recipes/", 20, Fault::StatusBefore(503));
    let out = env.czc().arg("push").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    proxy.clear();
    let (sent, _) = proxy.bytes("PUT", "/packs/");
    assert!(sent >= 40 << 20);
    env.czc().arg("push").assert().success();
    let (again, _) = proxy.bytes("PUT", "/packs/");
    assert!(again - sent < 1 << 20, "resent {} bytes", again - sent);

    // A pull that died with half the chunks in place reads only the rest.
    fs::remove_dir_all(&env.cache).unwrap();
    fs::remove_file(env.path("model.bin")).unwrap();
    let oid = Oid::of_bytes(&content);
    let partial = env.cache.join("partial");
    fs::create_dir_all(&partial).unwrap();
    let mut half = content.clone();
    for byte in &mut half[20 << 20..] {
        *byte = 0;
    }
    // And one damaged byte in the first half: rehashed, found wrong, read again.
    half[1000] ^= 1;
    fs::write(partial.join(oid.hex()), &half).unwrap();
    let (_, before) = proxy.bytes("GET", ".pack");
    env.czc().arg("pull").assert().success();
    let (_, after) = proxy.bytes("GET", ".pack");
    let read = after - before;
    assert!(read < 26 << 20, "read {read} bytes of 40 MiB");
    assert!(read >= 20 << 20, "read {read} bytes");
    assert!(env.read("model.bin") == content);
    assert!(
        !partial.join(oid.hex()).exists(),
        "the partial file became the object"
    );
}

#[test]
fn a_lying_recipe_or_a_missing_chunk_fails_by_name_and_admits_nothing() {
    use czcache::packs::recipe::Recipe;
    let server = S3Server::start(&["team"]);
    let env = with_credentials(TestEnv::new(), &server);
    env.write(".czcache.toml", s3_config(&server));
    let content = big_file(112, 20);
    env.write("model.bin", &content);
    env.czc().args(["save", "model.bin"]).assert().success();
    env.czc().arg("push").assert().success();
    let oid = Oid::of_bytes(&content);
    let recipe_path = server.root.join("team/czc/recipes").join(oid.hex());
    let good = fs::read(&recipe_path).unwrap();
    let recipe = Recipe::decode("r", &good, &oid).unwrap();
    let fresh = |env: &TestEnv| {
        let _ = fs::remove_dir_all(&env.cache);
        let _ = fs::remove_file(env.path("model.bin"));
    };

    // Chunks swapped (each exists, lengths add up): the whole-file hash refuses it.
    let mut swapped = recipe.clone();
    swapped.chunks.swap(0, 1);
    fs::write(&recipe_path, swapped.encode()).unwrap();
    fresh(&env);
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!env.path("model.bin").exists());
    assert!(stderr(&out).contains(&oid.to_string()), "{}", stderr(&out));

    // A damaged recipe is refused, naming its key.
    fs::write(&recipe_path, &good[..good.len() - 3]).unwrap();
    fresh(&env);
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("recipes/"), "{}", stderr(&out));

    // A chunk no pack holds: named.
    let mut missing = recipe.clone();
    let gone = Oid::of_bytes(b"a chunk nobody uploaded");
    missing.chunks[2].0 = gone;
    fs::write(&recipe_path, missing.encode()).unwrap();
    fresh(&env);
    let out = env.czc().arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&gone.to_string()), "{}", stderr(&out));
    assert!(!env.path("model.bin").exists());

    // Put right, it pulls.
    fs::write(&recipe_path, &good).unwrap();
    fresh(&env);
    env.czc().arg("pull").assert().success();
    assert!(env.read("model.bin") == content);
}

/// Sets every file under `dir` (recursively) two days into the past.
fn age_files(dir: &std::path::Path) {
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86400);
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
    }
}

fn files_in(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gc_remote_deletes_dead_packs_and_recipes_repacks_mostly_dead_ones_and_a_killed_gc_loses_nothing()
{
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    // One pack: a small live object beside three big dead ones.
    env.write("live.bin", bytes(120, 3000));
    for n in 0..3u64 {
        env.write(&format!("dead{n}.bin"), bytes(121 + n, 200_000));
    }
    env.czc()
        .args(["save", "live.bin", "dead0.bin", "dead1.bin", "dead2.bin"])
        .assert()
        .success();
    env.czc().arg("push").assert().success();
    // A second pack, all dead; and a chunked object, dead.
    env.write("gone.bin", bytes(125, 50_000));
    env.write("model.bin", big_file(126, 20));
    env.czc()
        .args(["save", "gone.bin", "model.bin"])
        .assert()
        .success();
    env.czc().arg("push").assert().success();
    let root = server.root.join("team/czc");
    let packs = root.join("packs");
    assert!(
        files_in(&packs, ".pack").len() >= 3,
        "{:?}",
        files_in(&packs, "")
    );
    assert_eq!(files_in(&root.join("recipes"), "").len(), 1);
    for dead in [
        "dead0.bin",
        "dead1.bin",
        "dead2.bin",
        "gone.bin",
        "model.bin",
    ] {
        fs::remove_file(env.path(&format!("{dead}.czc"))).unwrap();
    }

    // Within the grace period nothing goes.
    env.czc()
        .args(["gc", "--remote", "team"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deleted 0 objects"));
    let before = files_in(&packs, ".pack").len();
    assert!(before >= 3);

    // Past it: a gc that fails after writing the repacked pack, before the old one goes.
    age_files(&root);
    proxy.inject("HEAD", ".idx", 10, Fault::StatusBefore(500));
    let out = env
        .czc()
        .args(["gc", "--remote", "team", "--keep-younger-than", "1h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    proxy.clear();
    // Nothing live is lost: a fresh clone still gets live.bin.
    let clone = through(&proxy, &server);
    clone.write("live.bin.czc", env.read("live.bin.czc"));
    clone.czc().arg("pull").assert().success();
    assert_eq!(clone.read("live.bin"), bytes(120, 3000));

    // Run again: it finishes, and leaves exactly the live object's new pack.
    let out = env
        .czc()
        .args(["gc", "--remote", "team", "--keep-younger-than", "1h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files_in(&packs, ".pack").len(),
        1,
        "{:?}",
        files_in(&packs, "")
    );
    assert_eq!(files_in(&packs, ".idx").len(), 1);
    assert!(
        files_in(&root.join("recipes"), "").is_empty(),
        "the dead recipe went"
    );
    let pack = &files_in(&packs, ".pack")[0];
    assert!(
        fs::metadata(pack).unwrap().len() < 10_000,
        "only live.bin is left"
    );
    let fresh = through(&proxy, &server);
    fresh.write("live.bin.czc", env.read("live.bin.czc"));
    fresh.czc().arg("pull").assert().success();
    assert_eq!(fresh.read("live.bin"), bytes(120, 3000));
    // A pack with no index (a push killed between the two), past grace, is swept;
    // the live pack stays.
    let orphan = packs.join(format!("{}.pack", Oid::of_bytes(b"orphan").hex()));
    fs::write(&orphan, b"CZCPACK1 half an upload").unwrap();
    age_files(&packs);
    env.czc()
        .args(["gc", "--remote", "team", "--keep-younger-than", "1h"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deleted 0 objects"));
    assert!(!orphan.exists());
    assert_eq!(files_in(&packs, ".pack").len(), 1);
    let fresh = through(&proxy, &server);
    fresh.write("live.bin.czc", env.read("live.bin.czc"));
    fresh.czc().arg("pull").assert().success();
}

#[test]
fn a_pack_whose_upload_landed_but_was_answered_with_errors_is_found_there_and_not_lost() {
    let server = S3Server::start(&["team"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let env = through(&proxy, &server);
    // Twelve 1 MiB files: one pack, sent in one request.
    let names: Vec<String> = (0..12).map(|n| format!("f{n}.bin")).collect();
    for (n, name) in names.iter().enumerate() {
        env.write(name, bytes(130 + n as u64, 1 << 20));
    }
    let mut save = vec!["save"];
    save.extend(names.iter().map(String::as_str));
    env.czc().args(&save).assert().success();
    // Every write of the pack lands, and every answer is an error, retries included:
    // the pack of the right size is there, so the push goes on to its index.
    proxy.inject("PUT", ".pack", 100, Fault::StatusAfter(500));
    let out = env.czc().arg("push").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let applied = proxy.applied();
    assert!(
        applied.len() > 1,
        "the pack's write was retried: {applied:?}"
    );
    assert!(
        applied.iter().all(|request| request.starts_with("PUT ")),
        "{applied:?}"
    );
    let multipart: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|request| request.starts_with("POST") || request.contains("uploadId"))
        .collect();
    assert!(multipart.is_empty(), "a pack is one request: {multipart:?}");
    fs::remove_dir_all(&env.cache).unwrap();
    for name in &names {
        fs::remove_file(env.path(name)).unwrap();
    }
    env.czc().arg("pull").assert().success();
    for (n, name) in names.iter().enumerate() {
        assert_eq!(env.read(name), bytes(130 + n as u64, 1 << 20));
    }
}
