"""Every storage class against the real thing: folders on disk, moto's S3 server, a real
`czc serve`. One behaviour suite runs over each."""

import datetime
import os
import time

import pytest

import czcache


def write(path, data):
    path.write_bytes(data)
    return path


@pytest.fixture(params=["simple", "temporary", "s3", "http"])
def writable(request, project, tmp_path):
    if request.param == "simple":
        yield czcache.SimpleLocalStorage(tmp_path / "store")
    elif request.param == "temporary":
        storage = czcache.TemporaryLocalStorage()
        yield storage
        storage.close()
    elif request.param == "s3":
        yield request.getfixturevalue("s3")()
    else:
        url, token, _ = request.getfixturevalue("czc_serve")()
        yield czcache.HttpStorage(url, token=token)


def _suite(storage, scratch):
    one = write(scratch / "one.csv", b"a,b\n1,2\n")
    two = write(scratch / "two.csv", b"a,b\n3,4\n")
    key = "runs/7/results.csv"
    assert storage.get_hash(key) is None
    assert storage.get_last_modified(key) is None
    assert not storage.exists(key)
    with pytest.raises(czcache.NotFound) as missing:
        storage.copy(key, scratch / "out")
    assert isinstance(missing.value, KeyError) and key in str(missing.value)

    storage.copy_from(key, one)
    assert storage.exists(key)
    assert storage.get_hash(key) == czcache.hash_file(one)
    when = storage.get_last_modified(key)
    assert when.tzinfo is not None
    assert abs(when - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=5)
    assert storage.copy(key, scratch / "out.csv") == czcache.hash_file(one)
    assert (scratch / "out.csv").read_bytes() == one.read_bytes()
    assert storage.list("runs/") == [key]

    # Conditions: each holds or raises LostRace and writes nothing.
    with pytest.raises(czcache.LostRace):
        storage.copy_from_if_absent(key, two)
    with pytest.raises(czcache.LostRace):
        storage.copy_from_if_overwriting_hash(key, czcache.hash_bytes(b"stale"), two)
    assert storage.get_hash(key) == czcache.hash_file(one)
    storage.copy_from_if_overwriting_hash(key, czcache.hash_file(one), two)
    assert storage.get_hash(key) == czcache.hash_file(two)
    old = write(scratch / "old.csv", b"old")
    long_ago = time.time() - 86400
    os.utime(old, (long_ago, long_ago))
    assert storage.copy_from_if_local_is_newer(key, old) is False
    assert storage.get_hash(key) == czcache.hash_file(two)
    with pytest.raises(czcache.LostRace):
        storage.delete_if_hash_matches(key, czcache.hash_file(one))
    storage.delete_if_hash_matches(key, czcache.hash_file(two))
    assert not storage.exists(key)
    assert storage.copy_from_if_local_is_newer(key, old) is True
    assert storage.delete(key) is True
    assert storage.delete(key) is False

    # Keys that would leave the storage are refused, naming the key.
    for bad in ["../escape", "/abs/path", "a/../../b", ""]:
        with pytest.raises(czcache.BadValue):
            storage.copy_from(bad, one)


def test_every_writable_storage_keeps_its_contract(writable, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _suite(writable, scratch)


def test_a_read_only_storage_has_no_write_methods(project, tmp_path):
    share = tmp_path / "share"
    (share / "refs").mkdir(parents=True)
    (share / "refs" / "genome.fa").write_bytes(b">chr1\nACGT\n")
    storage = czcache.ReadOnlyFilesystemStorage(share)
    for method in ["copy_from", "delete", "copy_from_if_local_is_newer",
                   "copy_from_if_overwriting_hash", "delete_if_hash_matches"]:
        assert not hasattr(storage, method), method
    assert storage.path("refs/genome.fa") == share / "refs" / "genome.fa"
    with storage.open("refs/genome.fa", "r") as f:
        assert f.read() == ">chr1\nACGT\n"
    with pytest.raises(ValueError):
        storage.open("refs/genome.fa", "wb")
    with pytest.raises(czcache.NotFound):
        storage.open("refs/missing.fa")
    assert storage.get_hash("refs/genome.fa") == czcache.hash_bytes(b">chr1\nACGT\n")


def test_a_local_storage_writes_through_open_atomically(project, tmp_path):
    storage = czcache.SimpleLocalStorage(tmp_path / "store")
    with storage.open("notes/a.txt", "w") as f:
        f.write("first")
    assert storage.path("notes/a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with storage.open("notes/a.txt", "w") as f:
            f.write("half of a second")
            raise RuntimeError("the writer failed")
    # The failed write left the old file and no temp file.
    assert storage.path("notes/a.txt").read_text() == "first"
    assert os.listdir(tmp_path / "store" / "notes") == ["a.txt"]


def test_a_temporary_storage_is_removed_when_closed(project):
    with czcache.TemporaryLocalStorage() as storage:
        root = storage.root
        with storage.open("x.bin", "wb") as f:
            f.write(b"scratch")
        assert (root / "x.bin").read_bytes() == b"scratch"
    assert not root.exists()
    # Dropped without close: removed when collected.
    storage = czcache.TemporaryLocalStorage()
    root = storage.root
    assert root.is_dir()
    del storage
    import gc

    gc.collect()
    assert not root.exists()


def test_bad_urls_and_hashes_are_refused_naming_them(project):
    with pytest.raises(czcache.BadValue, match="gopher://x"):
        czcache.S3Storage("gopher://x")
    with pytest.raises(czcache.BadValue, match="ftp://h"):
        czcache.HttpStorage("ftp://h")
    with pytest.raises(czcache.BadValue, match="not-a-url"):
        czcache.S3Storage("s3://bucket/p", endpoint="not-a-url")
    storage = czcache.TemporaryLocalStorage()
    with pytest.raises(ValueError, match="blake3"):
        storage.delete_if_hash_matches("k", "md5:abc")


def test_http_storage_objects_against_a_real_czc_serve(project, tmp_path, czc_serve):
    url, token, folder = czc_serve()
    data = write(tmp_path / "weights.bin", b"weights " * 1000)
    oid = czcache.hash_file(data)
    key = "objects/" + oid[len("blake3:"):][:2] + "/" + oid[len("blake3:"):][2:]
    storage = czcache.HttpStorage(url, token=token)
    assert not storage.exists(key)
    storage.copy_from(key, data)
    assert storage.get_hash(key) == oid
    assert storage.copy(key, tmp_path / "back.bin") == oid
    assert (tmp_path / "back.bin").read_bytes() == data.read_bytes()
    # No token, no write.
    anonymous = czcache.HttpStorage(url)
    with pytest.raises(czcache.Error, match="401|token"):
        anonymous.copy_from(key.replace(key[-1], "0" if key[-1] != "0" else "1"), data)
    assert storage.delete(key) is True
    assert not storage.exists(key)
