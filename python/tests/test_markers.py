"""save, open, checkout, status, push, fetch, pull from Python: the reports `czc --json`
prints, on a real project folder with a folder remote."""

import os
import shutil

import pytest

import czcache


@pytest.fixture
def with_remote(project, tmp_path):
    remote = tmp_path / "remote"
    (project / ".czcache.toml").write_text(f'[remote]\ndefault = "archive"\n\n[remotes.archive]\nurl = "{remote}"\n')
    return remote


def test_save_status_push_and_pull_round_trip(with_remote, project, tmp_path):
    data = project / "data"
    data.mkdir()
    (data / "cells.h5ad").write_bytes(b"cells" * 1000)
    saved = czcache.save(data / "cells.h5ad")
    [entry] = saved["saved"]
    assert entry["oid"] == czcache.hash_bytes(b"cells" * 1000)
    assert entry["size"] == 5000
    assert (data / "cells.h5ad.czc").is_file()

    [state] = czcache.status()["files"]
    assert state["state"] == "ok"  # locally: the data matches its marker
    [state] = czcache.status(remote="")["files"]
    assert state["state"] == "not-pushed"  # the default remote lacks it
    pushed = czcache.push()
    assert pushed["transferred"] == 1 and pushed["remote"] == "archive"
    assert [f["state"] for f in czcache.status(remote="archive")["files"]] == ["ok"]

    # A fresh clone: the data and the cache are gone; pull brings both back.
    os.chmod(data / "cells.h5ad", 0o644)
    (data / "cells.h5ad").unlink()
    shutil.rmtree(os.environ["CZC_CACHE_DIR"])
    assert [f["state"] for f in czcache.status()["files"]] == ["not-cached"]
    pulled = czcache.pull()
    assert pulled["fetched"]["transferred"] == 1
    assert (data / "cells.h5ad").read_bytes() == b"cells" * 1000

    opened = czcache.open("data/cells.h5ad")
    assert opened.read_bytes() == b"cells" * 1000


def test_checkout_restores_and_fetch_downloads(with_remote, project):
    (project / "weights.bin").write_bytes(b"w" * 100)
    czcache.save(["weights.bin"])
    czcache.push(["weights.bin"])
    shutil.rmtree(os.environ["CZC_CACHE_DIR"])
    assert czcache.fetch()["transferred"] == 1
    os.chmod(project / "weights.bin", 0o644)
    (project / "weights.bin").unlink()
    report = czcache.checkout()
    assert report["restored"] == 1
    assert (project / "weights.bin").read_bytes() == b"w" * 100


def test_failures_raise_with_the_report_attached(project):
    with pytest.raises(czcache.Error) as raised:
        czcache.save(["missing.bin"])
    assert "missing.bin" in str(raised.value)
    assert raised.value.report["saved"] == []
    with pytest.raises(czcache.Error, match="no remote"):
        (project / "x.bin").write_bytes(b"x")
        czcache.save("x.bin")
        czcache.push()
    with pytest.raises(czcache.Error, match="nope"):
        czcache.open("nope")
