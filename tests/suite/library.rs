//! The library used as an embedding program would: no CLI, a cache the caller builds,
//! an injected clock for exact LRU order.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use czcache::config::{CacheConfig, IndexKind, LinkKind};
use czcache::storage::{FolderStorage, LocalStorage, ReadOnly, ReadStorage, WriteStorage};
use czcache::{Error, LocalCache, Marker, Oid};

fn cache_config(dir: &Path, limit: u64, index: IndexKind) -> CacheConfig {
    CacheConfig {
        dir: dir.join("cache"),
        size_limit: limit,
        index,
        link: vec![LinkKind::Reflink, LinkKind::Copy],
    }
}

#[test]
fn lru_order_follows_an_injected_clock_for_every_index() {
    for index in [IndexKind::Csv, IndexKind::Json, IndexKind::Sqlite] {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(1_000));
        let clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let cache = LocalCache::open(&cache_config(dir.path(), 300, index))
            .unwrap()
            .with_clock(clock);
        let mut oids = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            now.store(1_000 + i as i64, Ordering::SeqCst);
            let path = dir.path().join(name);
            std::fs::write(&path, vec![i as u8; 100]).unwrap();
            oids.push(cache.admit_file(&path).unwrap().oid);
        }
        // A remote holds them (only then may LRU take them).
        cache.mark_pushed(&oids).unwrap();
        // Touch `a` later than everything else: `b` is now least recently used.
        now.store(2_000, Ordering::SeqCst);
        cache.touch(&[oids[0]]).unwrap();
        now.store(3_000, Ordering::SeqCst);
        let d = dir.path().join("d");
        std::fs::write(&d, vec![9u8; 100]).unwrap();
        let admitted = cache.admit_file(&d).unwrap();
        assert!(admitted.added);
        assert!(cache.contains(&oids[0]), "{index:?}");
        assert!(
            !cache.contains(&oids[1]),
            "{index:?}: b was least recently used"
        );
        assert!(cache.contains(&oids[2]) && cache.contains(&admitted.oid));
        let entry = cache.index().get(&oids[0]).unwrap().unwrap();
        assert_eq!((entry.last_used_at, entry.hits), (2_000, 1));
        let info = cache.info().unwrap();
        assert_eq!((info.objects, info.size), (3, 300));
    }
}

#[test]
fn an_embedding_program_caches_and_reads_back_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(&cache_config(dir.path(), 1 << 30, IndexKind::Sqlite)).unwrap();
    let weights = dir.path().join("weights.bin");
    std::fs::write(&weights, b"model weights").unwrap();
    let admitted = cache.admit_file(&weights).unwrap();
    assert_eq!(admitted.oid, Oid::of_bytes(b"model weights"));
    // A marker for it, as the CLI would write.
    let marker = Marker::file(admitted.oid, admitted.size);
    assert_eq!(Marker::parse(marker.to_text().as_bytes()).unwrap(), marker);
    // Read back: a verified path, a placed copy, a stream.
    let path = cache.verified_path(&admitted.oid, &weights).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"model weights");
    let dest = dir.path().join("out/weights.bin");
    cache.materialize(&admitted.oid, &dest, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"model weights");
    let mut streamed = Vec::new();
    cache
        .copy_to_writer(&admitted.oid, &weights, &mut streamed)
        .unwrap();
    assert_eq!(streamed, b"model weights");
    // A miss is an error that names the oid.
    let missing = Oid::of_bytes(b"never saved");
    match cache.verified_path(&missing, Path::new("x")) {
        Err(Error::NotCached { oid, .. }) => assert_eq!(oid, missing),
        other => panic!("expected NotCached, got {other:?}"),
    }
    // The cache's object folder doubles as a read-only share in the remote layout.
    let share = ReadOnly::new(FolderStorage::new(cache.root()));
    assert!(share.exists(&admitted.oid.object_key()).unwrap());
    assert_eq!(
        share.hash(&admitted.oid.object_key()).unwrap(),
        Some(admitted.oid)
    );
    assert!(share.path(&admitted.oid.object_key()).unwrap().is_file());
    // And a writable folder takes a copy with a conditional put.
    let team = FolderStorage::new(dir.path().join("team"));
    team.put_if_absent(
        &admitted.oid.object_key(),
        &share.path(&admitted.oid.object_key()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        team.list("objects/").unwrap(),
        vec![admitted.oid.object_key()]
    );
}

#[test]
fn eviction_waits_while_another_process_uses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(dir.path(), 150, IndexKind::Sqlite);
    // Two handles hold two lock descriptors, exactly as two processes would.
    let reader = LocalCache::open(&config).unwrap();
    // A ticking clock: two admissions within one millisecond would tie and fall back to oid order.
    let ticks = Arc::new(AtomicI64::new(1_000));
    let writer = LocalCache::open(&config)
        .unwrap()
        .with_clock(Arc::new(move || ticks.fetch_add(1, Ordering::SeqCst)));
    let first = dir.path().join("first");
    std::fs::write(&first, vec![1u8; 100]).unwrap();
    let in_use = writer.admit_file(&first).unwrap().oid;
    writer.mark_pushed(&[in_use]).unwrap();
    let second = dir.path().join("second");
    std::fs::write(&second, vec![2u8; 100]).unwrap();
    // Over the limit, but `reader` is using the cache: nothing is removed yet.
    let second = writer.admit_file(&second).unwrap().oid;
    writer.mark_pushed(&[second]).unwrap();
    assert!(reader.contains(&in_use));
    assert_eq!(writer.info().unwrap().size, 200);
    let report = writer.evict_to(150).unwrap();
    assert!(report.deferred && report.removed.is_empty());
    // Once the other user is gone, eviction proceeds, least recently used first.
    drop(reader);
    let report = writer.evict_to(150).unwrap();
    assert_eq!(report.removed, vec![in_use]);
    assert_eq!(writer.info().unwrap().size, 100);
}

/// Puts `bytes` under `key` of a storage the way another writer would, with a
/// modification time after any before (so "newer" is never a tie within a second).
fn seed_into(storage: &dyn WriteStorage, scratch: &Path, key: &str, bytes: &[u8]) {
    static SEEDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEEDS.fetch_add(1, Ordering::SeqCst);
    let file = scratch.join(format!("seed-{n}"));
    std::fs::write(&file, bytes).unwrap();
    let when = std::time::SystemTime::now() + std::time::Duration::from_secs(10 * (n + 1));
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(when)
        .unwrap();
    storage.put(key, &file).unwrap();
}

#[test]
fn the_cache_suites_pass_over_all_four_caches() {
    use czcache::caches::{
        conformance, CopyToLocalCache, LocalReadOnlyCache, SynchronizedRemoteAndLocalCache,
    };
    use czcache::config::ReadPolicy;
    use czcache::storage::TemporaryStorage;
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let local = || LocalCache::open(&cache_config(dir.path(), 1 << 30, IndexKind::Sqlite)).unwrap();

    // Keys in the local cache only.
    let cache = local();
    conformance::write_suite(&cache);
    conformance::read_suite(&cache, &|key, bytes| {
        let file = scratch.join("local-seed");
        std::fs::write(&file, bytes).unwrap();
        czcache::Cache::put(&cache, key, &file, czcache::caches::PutCondition::Always).unwrap();
    });

    // A share served in place.
    let share = FolderStorage::new(dir.path().join("share"));
    let in_place = LocalReadOnlyCache::new(
        "share",
        ReadOnly::new(FolderStorage::new(dir.path().join("share"))),
    );
    conformance::read_suite(&in_place, &|key, bytes| {
        seed_into(&share, &scratch, key, bytes)
    });
    conformance::read_only_suite(&in_place);

    // Read storages copied into the local cache.
    let bucket = Arc::new(TemporaryStorage::new().unwrap());
    let copying = CopyToLocalCache::new(
        local(),
        vec![
            (
                "empty".into(),
                Arc::new(TemporaryStorage::new().unwrap()) as Arc<dyn ReadStorage>,
            ),
            ("bucket".into(), bucket.clone() as Arc<dyn ReadStorage>),
        ],
        ReadPolicy::First,
    );
    conformance::read_suite(&copying, &|key, bytes| {
        seed_into(bucket.as_ref(), &scratch, key, bytes)
    });
    conformance::read_only_suite(&copying);

    // One remote, written and read through.
    let remote = Arc::new(TemporaryStorage::new().unwrap());
    let synced = SynchronizedRemoteAndLocalCache::new(local(), "scratch", remote.clone());
    conformance::write_suite(&synced);
    conformance::read_suite(&synced, &|key, bytes| {
        seed_into(remote.as_ref(), &scratch, key, bytes)
    });
    // Written through: the remote has it, and the first get is a local hit.
    let input = scratch.join("through");
    std::fs::write(&input, b"a,b\n1,2\n").unwrap();
    czcache::Cache::put(
        &synced,
        "runs/1.csv",
        &input,
        czcache::caches::PutCondition::Always,
    )
    .unwrap();
    assert_eq!(
        remote.hash("runs/1.csv").unwrap(),
        Some(Oid::of_bytes(b"a,b\n1,2\n"))
    );
}

#[test]
fn the_newest_policy_serves_the_newest_copy_and_first_the_first() {
    use czcache::caches::{Cache, CopyToLocalCache};
    use czcache::config::ReadPolicy;
    use czcache::storage::TemporaryStorage;
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(TemporaryStorage::new().unwrap());
    let new = Arc::new(TemporaryStorage::new().unwrap());
    seed_into(old.as_ref(), dir.path(), "k.bin", b"old copy");
    seed_into(new.as_ref(), dir.path(), "k.bin", b"new copy");
    let storages = || {
        vec![
            ("old".to_string(), old.clone() as Arc<dyn ReadStorage>),
            ("new".to_string(), new.clone() as Arc<dyn ReadStorage>),
        ]
    };
    for (policy, expected, cache_dir) in [
        (ReadPolicy::First, &b"old copy"[..], "first"),
        (ReadPolicy::Newest, &b"new copy"[..], "newest"),
    ] {
        let local = LocalCache::open(&cache_config(
            &dir.path().join(cache_dir),
            1 << 30,
            IndexKind::Csv,
        ))
        .unwrap();
        let cache = CopyToLocalCache::new(local, storages(), policy);
        assert_eq!(
            std::fs::read(cache.get("k.bin").unwrap()).unwrap(),
            expected,
            "{policy:?}"
        );
    }
}

#[test]
fn named_caches_come_from_configuration() {
    use czcache::config::{Config, Env};
    use czcache::open_cache;
    let dir = tempfile::tempdir().unwrap();
    let team = dir.path().join("team");
    let share = dir.path().join("share");
    std::fs::create_dir_all(share.join("refs")).unwrap();
    std::fs::write(share.join("refs/genome.fa"), b">chr1").unwrap();
    std::fs::write(
        dir.path().join(".czcache.toml"),
        format!(
            "[cache]\ndir = \"cache\"\ndefault = \"team\"\n\n[remotes.team]\nurl = \"{}\"\n\n[remotes.share]\nurl = \"{}\"\nread_only = true\n\n[caches.team]\nwrite = \"team\"\n\n[caches.refs]\nread = [\"share\"]\ncopy = false\n\n[caches.both]\nread = [\"share\", \"team\"]\npolicy = \"newest\"\n",
            team.display(),
            share.display()
        ),
    )
    .unwrap();
    let mut env = Env::default();
    env.vars
        .insert("HOME".into(), dir.path().join("home").display().to_string());
    let config = Config::load(Some(dir.path()), &env).unwrap();
    // The default cache writes through to the team folder.
    let cache = open_cache(&config, &env, dir.path(), None).unwrap();
    let input = dir.path().join("x");
    std::fs::write(&input, b"x").unwrap();
    cache
        .put("k", &input, czcache::caches::PutCondition::Always)
        .unwrap();
    assert!(team.join("k").is_file());
    // The share is served in place: the path is the share's own file.
    let refs = open_cache(&config, &env, dir.path(), Some("refs")).unwrap();
    assert_eq!(
        refs.get("refs/genome.fa").unwrap(),
        share.join("refs/genome.fa")
    );
    // A chain of two reads either.
    let both = open_cache(&config, &env, dir.path(), Some("both")).unwrap();
    assert_eq!(std::fs::read(both.get("k").unwrap()).unwrap(), b"x");
    assert!(matches!(
        both.put("k", &input, czcache::caches::PutCondition::Always),
        Err(Error::ReadOnlyCache { .. })
    ));
    // `local` is built in; a name nobody configured is an error naming the known ones.
    let local = open_cache(&config, &env, dir.path(), Some("local")).unwrap();
    assert!(local.describe().contains("local cache"));
    let unknown = open_cache(&config, &env, dir.path(), Some("nope"))
        .err()
        .unwrap();
    assert!(
        unknown
            .to_string()
            .contains("both, local, public, refs, team"),
        "{unknown}"
    );
    // The built-in public cache needs a `public` remote, and says how to add one.
    let public = open_cache(&config, &env, dir.path(), Some("public"))
        .err()
        .unwrap();
    assert!(
        public.to_string().contains("czc remote add public"),
        "{public}"
    );
    let listed = czcache::caches::list(&config);
    let kinds: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|c| (c.name.as_str(), c.kind, c.default))
        .collect();
    assert_eq!(
        kinds,
        [
            ("both", "copy-to-local", false),
            ("local", "local", false),
            ("public", "unconfigured", false),
            ("refs", "local-read-only", false),
            ("team", "synchronized", true)
        ]
    );
}

#[test]
fn bad_named_caches_are_refused_naming_the_setting() {
    use czcache::config::{Config, Env};
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::default();
    env.vars
        .insert("HOME".into(), dir.path().join("home").display().to_string());
    for (text, named) in [
        ("[caches.x]\nread = [\"nope\"]\n", "caches.x"),
        ("[caches.x]\npolicy = \"first\"\n", "caches.x"),
        ("[cache]\ndefault = \"missing\"\n", "cache.default"),
        ("[caches.x]\nread = []\nwrite = \"a\"\nbogus = 1\n", "bogus"),
    ] {
        std::fs::write(dir.path().join(".czcache.toml"), text).unwrap();
        let err = Config::load(Some(dir.path()), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{text}: {err}");
    }
}

#[test]
fn the_last_process_to_leave_evicts_what_was_put_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(dir.path(), 150, IndexKind::Csv);
    let reader = LocalCache::open(&config).unwrap();
    let writer = LocalCache::open(&config).unwrap();
    let mut oids = Vec::new();
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![i as u8; 100]).unwrap();
        let oid = writer.admit_file(&path).unwrap().oid;
        writer.mark_pushed(&[oid]).unwrap();
        oids.push(oid);
    }
    // The reader kept the writer from evicting; the writer leaves first, still blocked.
    assert_eq!(writer.info().unwrap().size, 300);
    drop(writer);
    assert_eq!(reader.info().unwrap().size, 300);
    // The reader never wrote, but it is the last to leave: it evicts.
    drop(reader);
    let after = LocalCache::open(&config).unwrap();
    assert!(
        after.info().unwrap().size <= 150,
        "{:?}",
        after.info().unwrap()
    );
    assert!(!dir.path().join("cache/evict-pending").exists());
}

/// Keeps each task the library starts, with its counters.
#[derive(Default)]
struct Recorder {
    tasks: std::sync::Mutex<Vec<(&'static str, Arc<czcache::report::Counter>)>>,
    warnings: std::sync::Mutex<Vec<String>>,
}

impl czcache::report::Reporter for Recorder {
    fn task(&self, title: &'static str) -> Arc<dyn czcache::report::Progress> {
        let task = Arc::new(czcache::report::Counter::default());
        self.tasks.lock().unwrap().push((title, task.clone()));
        task
    }
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}

impl Recorder {
    /// (files done, files total, bytes done, bytes total, times finished) of `title`.
    fn totals(&self, title: &str) -> (u64, u64, u64, u64, u64) {
        let tasks = self.tasks.lock().unwrap();
        let matching: Vec<_> = tasks.iter().filter(|(t, _)| *t == title).collect();
        assert_eq!(matching.len(), 1, "one {title} task: {:?}", tasks.len());
        let task = &matching[0].1;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::SeqCst);
        (
            load(&task.files_done),
            load(&task.files_total),
            load(&task.bytes_done),
            load(&task.bytes_total),
            load(&task.finished),
        )
    }
}

#[test]
fn progress_reaches_the_front_ends_reporter_in_files_and_bytes() {
    use czcache::config::{Config, Env};
    use czcache::ops::{self, Context, Options};
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    let remote = dir.path().join("remote");
    std::fs::create_dir_all(project.join("data")).unwrap();
    std::fs::write(
        project.join(".czcache.toml"),
        format!(
            "[remote]\ndefault = \"team\"\n\n[remotes.team]\nurl = \"{}\"\n",
            remote.display()
        ),
    )
    .unwrap();
    let mut total = 0;
    for n in 0..5u8 {
        let bytes = vec![n; 1000 + n as usize];
        total += bytes.len() as u64;
        std::fs::write(project.join(format!("data/f{n}")), bytes).unwrap();
    }
    let env = Env {
        vars: [
            (
                "CZC_CACHE_DIR".to_string(),
                dir.path().join("cache").display().to_string(),
            ),
            ("HOME".to_string(), dir.path().display().to_string()),
        ]
        .into_iter()
        .collect(),
    };
    let config = Config::load(Some(&project), &env).unwrap();
    let recorder = Arc::new(Recorder::default());
    let ctx = Context::open_with(
        &project,
        config,
        env,
        Options {
            reporter: Some(recorder.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    let saved = ops::save::save(&ctx, &[project.join("data")]);
    assert!(saved.errors.is_empty(), "{:?}", saved.errors);
    // The task ended with the save: its bar is gone before the results print.
    assert_eq!(recorder.totals("saving"), (5, 5, total, total, 1));
    let pushed = ops::transfer::push(&ctx, &[], None, false).unwrap();
    assert_eq!(pushed.transferred, 6, "five files and the manifest");
    let (files_done, files_total, bytes_done, bytes_total, finished) = recorder.totals("pushing");
    assert_eq!((files_done, files_total, finished), (6, 6, 1));
    assert_eq!(bytes_done, bytes_total);
    assert!(bytes_total > total, "the files and the manifest");
    drop(ctx);
    assert!(recorder.warnings.lock().unwrap().is_empty());
}
