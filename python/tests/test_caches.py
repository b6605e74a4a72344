"""Every cache class against real storages: folders, moto's S3 server; conditions,
known hashes, many processes at once, eviction pressure."""

import datetime
import os
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

import czcache

from conftest import run_python


def write(path, data):
    path.write_bytes(data)
    return path


def test_a_local_cache_keeps_keys_with_their_names(project):
    cache = czcache.LocalCache()
    src = write(project / "cells.h5ad", b"an anndata file")
    assert cache.put("data/cells.h5ad", src) is True
    path = cache.get("data/cells.h5ad")
    assert path.name == "cells.h5ad" and path.suffix == ".h5ad"
    assert path.read_bytes() == b"an anndata file"
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    with cache.open("data/cells.h5ad", "rb") as f:
        assert f.read() == b"an anndata file"
    assert cache.get_hash("data/cells.h5ad").startswith("blake3:")
    when = cache.get_last_modified("data/cells.h5ad")
    assert when.tzinfo is not None
    assert abs(when - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=5)


def test_conditions_hold_or_raise_lost_race(project):
    cache = czcache.LocalCache()
    one = write(project / "one", b"one")
    two = write(project / "two", b"two")
    assert cache.put("k", one, if_absent=True)
    with pytest.raises(czcache.LostRace):
        cache.put("k", two, if_absent=True)
    stale = "blake3:" + "0" * 64
    with pytest.raises(czcache.LostRace):
        cache.put("k", two, if_match=stale)
    assert cache.put("k", two, if_match=cache.get_hash("k"))
    assert cache.get("k").read_bytes() == b"two"
    with pytest.raises(ValueError):
        cache.put("k", two, if_absent=True, if_newer=True)
    with pytest.raises(czcache.LostRace):
        cache.delete("k", if_match=stale)
    assert cache.delete("k") is True
    assert cache.delete("k") is False


def test_a_missing_key_is_not_found_and_a_key_error(project):
    cache = czcache.LocalCache()
    with pytest.raises(czcache.NotFound) as raised:
        cache.get("nowhere.bin")
    assert isinstance(raised.value, KeyError)
    assert isinstance(raised.value, czcache.Error)
    assert "nowhere.bin" in str(raised.value)
    assert cache.get_hash("nowhere.bin") is None
    with pytest.raises(czcache.Error):
        cache.get("../escape")


def test_named_caches_come_from_the_configuration(project, tmp_path):
    share = tmp_path / "share"
    (share / "refs").mkdir(parents=True)
    write(share / "refs" / "genome.fa", b">chr1\n")
    team = tmp_path / "team"
    (project / ".czcache.toml").write_text(
        f'[remotes.share]\nurl = "{share}"\nread_only = true\n\n'
        f'[remotes.team]\nurl = "{team}"\n\n'
        '[caches.refs]\nread = ["share"]\ncopy = false\n\n'
        '[caches.team]\nwrite = "team"\n'
    )
    refs = czcache.open_cache("refs")
    assert refs.get("refs/genome.fa") == share / "refs" / "genome.fa"
    with pytest.raises(czcache.ReadOnly):
        refs.put("refs/genome.fa", project / ".czcache.toml")
    synced = czcache.open_cache("team")
    synced.put("runs/metrics.json", write(project / "m.json", b'{"auc": 0.9}'))
    assert (team / "runs" / "metrics.json").read_bytes() == b'{"auc": 0.9}'
    assert synced.get("runs/metrics.json").read_bytes() == b'{"auc": 0.9}'
    names = {c["name"]: c for c in czcache.caches()}
    assert names["refs"]["kind"] == "local-read-only"
    assert names["team"]["kind"] == "synchronized"
    assert names["local"]["default"] is True
    with pytest.raises(czcache.Error, match="no cache named 'nope'"):
        czcache.open_cache("nope")


@pytest.fixture(params=["copy-folder", "copy-s3", "copy-http", "sync-folder", "sync-s3",
                        "sync-http", "read-only"])
def cache_and_seed(request, project, tmp_path):
    """A cache of each kind, and a function that stores bytes behind it (a file on the
    share, an upload to the bucket or the czc server), as a colleague or a pipeline would."""
    kind = request.param
    if kind.endswith("s3"):
        storage = request.getfixturevalue("s3")()
    elif kind.endswith("http"):
        url, token, _ = request.getfixturevalue("czc_serve")()
        storage = czcache.HttpStorage(url, token=token)
    elif kind == "read-only":
        storage = czcache.ReadOnlyFilesystemStorage(tmp_path / "share")
    else:
        storage = czcache.SimpleLocalStorage(tmp_path / "share")
    seeder = czcache.SimpleLocalStorage(tmp_path / "share") if kind == "read-only" else storage

    def seed(key, data):
        src = tmp_path / "seed.tmp"
        src.write_bytes(data)
        seeder.copy_from(key, src)

    local = czcache.LocalCache(tmp_path / "local-cache")
    if kind.startswith("copy"):
        return czcache.CopyToLocalCache([storage], local=local), seed
    if kind.startswith("sync"):
        return czcache.SynchronizedRemoteAndLocalCache(storage, local=local), seed
    return czcache.LocalReadOnlyCache(storage), seed


def test_every_cache_reads_keys_with_their_names_and_sees_rewrites(cache_and_seed):
    cache, seed = cache_and_seed
    with pytest.raises(czcache.NotFound):
        cache.get("nowhere/at-all.bin")
    assert cache.get_hash("nowhere/at-all.bin") is None
    seed("data/cells.h5ad", b"first version")
    path = cache.get("data/cells.h5ad")
    assert path.name == "cells.h5ad"
    assert path.read_bytes() == b"first version"
    with cache.open("data/cells.h5ad") as f:
        assert f.read() == "first version"
    assert cache.get_hash("data/cells.h5ad") == czcache.hash_bytes(b"first version")
    assert cache.get_last_modified("data/cells.h5ad").tzinfo is not None
    assert cache.keys("data/") == ["data/cells.h5ad"]
    seed("data/cells.h5ad", b"second, longer version")
    assert cache.get("data/cells.h5ad").read_bytes() == b"second, longer version"
    with pytest.raises(czcache.BadValue):
        cache.get("../escape")


def test_writable_caches_keep_every_condition(project, tmp_path, s3, czc_serve):
    local = czcache.LocalCache(tmp_path / "c")
    for cache in [
        czcache.LocalCache(tmp_path / "c"),
        czcache.SynchronizedRemoteAndLocalCache(czcache.SimpleLocalStorage(tmp_path / "r"), local),
        czcache.SynchronizedRemoteAndLocalCache(s3(), local),
        czcache.SynchronizedRemoteAndLocalCache(czcache.HttpStorage(*czc_serve()[:2]), local),
    ]:
        one = write(tmp_path / "one", b"one")
        two = write(tmp_path / "two", b"two")
        key = "runs/7/results.csv"
        assert cache.put(key, one, if_absent=True)
        with pytest.raises(czcache.LostRace):
            cache.put(key, two, if_absent=True)
        with pytest.raises(czcache.LostRace):
            cache.put(key, two, if_match=czcache.hash_bytes(b"stale"))
        assert cache.get(key).read_bytes() == b"one"
        assert cache.put(key, two, if_match=czcache.hash_bytes(b"one"))
        assert cache.get(key).read_bytes() == b"two"
        old = write(tmp_path / "old", b"old")
        os.utime(old, (1e9, 1e9))
        assert cache.put(key, old, if_newer=True) is False
        with pytest.raises(czcache.LostRace):
            cache.delete(key, if_match=czcache.hash_bytes(b"one"))
        assert cache.delete(key, if_match=czcache.hash_bytes(b"two"))
        assert cache.delete(key) is False
        with pytest.raises(czcache.NotFound):
            cache.get(key)


def test_read_only_caches_refuse_writes(project, tmp_path):
    share = czcache.ReadOnlyFilesystemStorage(tmp_path / "share")
    src = write(tmp_path / "f", b"refused")
    for cache in [czcache.LocalReadOnlyCache(share), czcache.CopyToLocalCache([share])]:
        with pytest.raises(czcache.ReadOnly):
            cache.put("k", src)
        with pytest.raises(czcache.ReadOnly):
            cache.delete("k")
    with pytest.raises(ValueError):
        czcache.LocalReadOnlyCache(czcache.HttpStorage("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="policy"):
        czcache.CopyToLocalCache([share], policy="random")
    with pytest.raises(TypeError):
        czcache.CopyToLocalCache([share], local="/tmp/x")


def test_a_known_hash_skips_a_bad_copy_for_the_next_storage(project, tmp_path, s3):
    good = b"the real weights" * 1000
    share = czcache.SimpleLocalStorage(tmp_path / "share")
    write(tmp_path / "bad", b"a truncated copy")
    share.copy_from("models/bert.bin", tmp_path / "bad")
    bucket = s3()
    bucket.copy_from("models/bert.bin", write(tmp_path / "good", good))
    known = czcache.hash_bytes(good)
    cache = czcache.CopyToLocalCache([share, bucket], local=czcache.LocalCache(tmp_path / "c"))
    with pytest.warns(czcache.CzcacheWarning, match="not the expected"):
        path = cache.get("models/bert.bin", hash=known)
    assert path.read_bytes() == good
    assert path.name == "bert.bin"
    # Without a hash, the first storage's copy is what the key holds.
    assert cache.get("models/bert.bin").read_bytes() == b"a truncated copy"
    # Known and cached: served with no storage asked (the share may even be gone).
    assert cache.get("models/bert.bin", hash=known).read_bytes() == good
    with pytest.raises(czcache.CorruptObject, match="no copy of models/bert.bin"):
        with pytest.warns(czcache.CzcacheWarning):
            cache.get("models/bert.bin", hash=czcache.hash_bytes(b"something else"))
    local = czcache.LocalCache(tmp_path / "c")
    local.put("k", tmp_path / "bad")
    with pytest.raises(czcache.CorruptObject, match="not the expected"):
        local.get("k", hash=known)


def test_stats_count_hits_misses_and_the_local_size(project, tmp_path):
    share = czcache.SimpleLocalStorage(tmp_path / "share")
    share.copy_from("a.bin", write(tmp_path / "a", b"x" * 1000))
    cache = czcache.CopyToLocalCache([share], local=czcache.LocalCache(tmp_path / "c", 10**6))
    cache.get("a.bin")
    cache.get("a.bin")
    cache.get("a.bin")
    with pytest.raises(czcache.NotFound):
        cache.get("b.bin")
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 2)
    assert stats.size == 1000 and stats.limit == 10**6
    assert czcache.LocalReadOnlyCache(share).stats().size is None


def test_sixteen_processes_getting_one_uncached_key_download_it_once(project, tmp_path, s3):
    bucket = s3()
    data = os.urandom(8 << 20)
    bucket.copy_from("big/matrix.npy", write(tmp_path / "m", data))
    code = textwrap.dedent(f"""
        import json, czcache
        bucket = czcache.S3Storage({bucket.url!r}, endpoint={bucket.client.meta.endpoint_url!r})
        cache = czcache.CopyToLocalCache([bucket], local=czcache.LocalCache({str(tmp_path / "c")!r}))
        path = cache.get("big/matrix.npy")
        print(json.dumps([czcache.hash_file(path), cache.stats().misses]))
    """)
    with ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(lambda _: run_python(code, project), range(16)))
    results = []
    for run in runs:
        assert run.returncode == 0, run.stderr
        results.append(__import__("json").loads(run.stdout))
    assert {oid for oid, _ in results} == {czcache.hash_bytes(data)}
    assert sum(misses for _, misses in results) == 1, results


def test_a_path_stays_valid_under_eviction_pressure(project, tmp_path):
    cache_dir = tmp_path / "c"
    cache = czcache.LocalCache(cache_dir, size_limit=1 << 20)
    data = os.urandom(600 << 10)
    cache.put("data/cells.h5ad", write(tmp_path / "cells", data))
    path = cache.get("data/cells.h5ad")
    # Another process fills the same cache far past its limit.
    filler = textwrap.dedent(f"""
        import os, czcache
        cache = czcache.LocalCache({str(cache_dir)!r}, size_limit=1 << 20)
        for i in range(8):
            src = {str(tmp_path)!r} + f"/fill{{i}}"
            open(src, "wb").write(os.urandom(300 << 10))
            cache.put(f"fill/{{i}}.bin", src)
    """)
    run = run_python(filler, project)
    assert run.returncode == 0, run.stderr
    assert path.read_bytes() == data
    # And this process's own puts do not evict what it handed out.
    for i in range(4):
        cache.put(f"more/{i}.bin", write(tmp_path / f"more{i}", os.urandom(300 << 10)))
    assert path.read_bytes() == data
