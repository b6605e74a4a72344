"""The Python face of czc's caches, against real files in a temp folder (no mocks)."""

import datetime
import os

import pytest

import czcache


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with its own HOME and cache; the tests run inside it."""
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("CZC_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("CZC_CACHE_SIZE_LIMIT", "CZC_CACHE_INDEX", "CZC_CACHE_LINK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(root)
    return root


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
