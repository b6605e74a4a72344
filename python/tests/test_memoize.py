"""memoize: keyed on the function, its source and its arguments' content; results are
objects in the cache (written through to a shared remote); no pickle unless asked."""

import os
import textwrap

import pytest

import czcache
from czcache.memoize import canonical

from conftest import run_python


@pytest.fixture
def cache(project, tmp_path):
    return czcache.LocalCache(tmp_path / "c")


def test_a_repeated_call_is_a_hit_and_other_arguments_are_misses(cache):
    calls = []

    @cache.memoize()
    def square(x, scale=1):
        calls.append(x)
        return {"x": x, "y": x * x * scale, "pair": (x, scale)}

    assert square(3) == {"x": 3, "y": 9, "pair": (3, 1)}
    assert square(3) == {"x": 3, "y": 9, "pair": (3, 1)}  # the tuple comes back a tuple
    assert square(x=3, scale=1)["y"] == 9  # the same call, spelled otherwise
    assert square(3.0)["y"] == 9  # untyped: 3 and 3.0 are one call
    assert calls == [3]
    square(4)
    square(3, scale=2)
    assert calls == [3, 4, 3]
    assert square.__cache_key__(3).startswith("memo/_/")


def test_typed_and_ignore(cache):
    calls = []

    @cache.memoize(typed=True, ignore=("verbose",))
    def f(x, verbose=False):
        calls.append(x)
        return x

    f(3)
    f(3.0)
    f(3, verbose=True)
    assert calls == [3, 3.0]


def test_bytes_numpy_and_pandas_round_trip_without_pickle(cache):
    np = pytest.importorskip("numpy")

    @cache.memoize()
    def make(kind, n):
        if kind == "bytes":
            return b"\x00\x01" * n
        return np.arange(n, dtype=np.float32).reshape(2, -1)

    assert make("bytes", 3) == b"\x00\x01" * 3
    first = make("array", 10)
    again = make("array", 10)
    assert again.dtype == np.float32 and again.shape == (2, 5)
    assert (first == again).all()
    # A hit maps the cached file read-only: no copy, and no changing the cache's bytes.
    assert not again.flags.writeable
    with pytest.raises(ValueError):
        again[0, 0] = 1
    stored = cache.get(make.__cache_key__("array", 10)).read_bytes()
    assert b'"format": "npy"' in stored


def test_numpy_arguments_are_keyed_by_content(cache):
    np = pytest.importorskip("numpy")
    calls = []

    @cache.memoize()
    def total(a):
        calls.append(1)
        return float(a.sum())

    a = np.arange(1000)
    assert total(a) == total(a.copy()) == 499500.0
    b = a.copy()
    b[500] = 0
    total(b)
    total(a.astype(np.int32))  # same numbers, other dtype: other bytes
    assert len(calls) == 3
    assert canonical(np.float64(2.5)) == canonical(np.array(2.5))
    with pytest.raises(TypeError, match="Python objects"):
        total(np.array([object()]))


def test_pandas_arguments_and_results(cache):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    calls = []

    @cache.memoize()
    def describe(frame):
        calls.append(1)
        return frame.describe()

    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    first = describe(frame)
    assert describe(frame.copy()).equals(first)
    changed = frame.copy()
    changed.loc[1, "b"] = "w"
    describe(changed)
    assert len(calls) == 2


def test_a_path_argument_is_keyed_by_the_files_content(cache, tmp_path):
    calls = []

    @cache.memoize()
    def count_lines(path):
        calls.append(1)
        return len(open(path).read().splitlines())

    data = tmp_path / "cells.csv"
    data.write_text("a\nb\n")
    assert count_lines(data) == 2
    assert count_lines(data) == 2
    moved = tmp_path / "moved.csv"
    moved.write_text("a\nb\n")
    assert count_lines(moved) == 2  # the same bytes elsewhere: a hit
    data.write_text("a\nb\nc\n")
    assert count_lines(data) == 3  # changed: a miss
    assert len(calls) == 2


class Model:
    """A result JSON cannot hold."""

    def __init__(self, w):
        self.w = w


def test_no_pickle_unless_asked_and_never_loaded_for_a_function_that_did_not_ask(cache):
    @cache.memoize(name="fit")
    def fit(w):
        return Model(w)

    with pytest.raises(TypeError, match="serializer='pickle'"):
        fit(1)

    @cache.memoize(name="fit_pickled", serializer="pickle")
    def fit_pickled(w):
        return Model(w)

    assert fit_pickled(2).w == 2
    assert fit_pickled(2).w == 2

    # Someone stores a pickle under the key of a function that never opted in.
    @cache.memoize(name="fit_json")
    def fit_json(w):
        return {"w": w}

    key = fit_json.__cache_key__(3)
    pickled = cache.get(fit_pickled.__cache_key__(2))
    cache.put(key, pickled)
    with pytest.raises(czcache.Error, match="refused"):
        fit_json(3)


def test_expire_evict_by_tag(cache):
    calls = []

    @cache.memoize(expire=0.2, tag="nightly")
    def f(x):
        calls.append(x)
        return x

    @cache.memoize(tag="keep")
    def g(x):
        return x

    f(1), f(2), g(1)
    assert calls == [1, 2]
    import time

    time.sleep(0.3)
    f(1)  # expired: computed again and stored over the old one
    assert calls == [1, 2, 1]
    time.sleep(0.3)
    assert cache.expire() == 2
    assert cache.evict("keep") == 1
    assert cache.keys("memo/") == []


def test_editing_the_function_is_a_miss(project, tmp_path):
    module = tmp_path / "pipeline.py"
    cache_dir = tmp_path / "c"
    template = textwrap.dedent("""
        import czcache
        cache = czcache.LocalCache({cache_dir!r})
        calls = []
        @cache.memoize()
        def embed(n):
            calls.append(n)
            return [n * {factor}]
    """)
    runner = textwrap.dedent(f"""
        import sys, json
        sys.path.insert(0, {str(tmp_path)!r})
        import pipeline
        print(json.dumps([pipeline.embed(4), len(pipeline.calls)]))
    """)
    module.write_text(template.format(cache_dir=str(cache_dir), factor=2))
    runs = [run_python(runner, project) for _ in range(2)]
    module.write_text(template.format(cache_dir=str(cache_dir), factor=3))
    runs.append(run_python(runner, project))
    outputs = []
    for run in runs:
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout.strip())
    assert outputs == ["[[8], 1]", "[[8], 0]", "[[12], 1]"]


def test_memoize_across_two_processes_sharing_an_s3_remote(project, tmp_path, s3):
    bucket = s3()
    data = tmp_path / "cells.csv"
    data.write_text("1\n2\n3\n")
    module = tmp_path / "pipeline_s3.py"
    template = textwrap.dedent("""
        import czcache
        calls = []

        def make_cache(local):
            remote = czcache.S3Storage({url!r}, endpoint={endpoint!r})
            return czcache.SynchronizedRemoteAndLocalCache(remote, local=czcache.LocalCache(local))

        def total(path):
            calls.append(1)
            return sum(int(line) for line in open(path)) * {factor}
    """)

    def write_module(factor):
        module.write_text(template.format(url=bucket.url, endpoint=bucket.client.meta.endpoint_url,
                                          factor=factor))

    runner = textwrap.dedent(f"""
        import json, pathlib, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import pipeline_s3 as p
        total = p.make_cache(sys.argv[1]).memoize(name="total")(p.total)
        print(json.dumps([total(pathlib.Path({str(data)!r})), len(p.calls)]))
    """)

    def run(local):
        done = run_python(runner, project, tmp_path / local)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    write_module(1)
    assert run("alice-cache") == "[6, 1]"
    assert run("bob-cache") == "[6, 0]"  # the colleague's run: a hit, not called
    data.write_text("1\n2\n3\n4\n")
    assert run("bob-cache") == "[10, 1]"  # a changed input file: a miss
    assert run("alice-cache") == "[10, 0]"  # and that result is shared in turn
    write_module(2)
    assert run("alice-cache") == "[20, 1]"  # the function edited: a miss


def test_two_processes_computing_one_call_at_once_both_return_and_one_copy_is_kept(
    project, tmp_path
):
    cache_dir = tmp_path / "shared-cache"
    gate = tmp_path / "gate"
    code = textwrap.dedent(f"""
        import json, os, sys, time, czcache
        cache = czcache.LocalCache({str(cache_dir)!r})
        @cache.memoize(name="slow")
        def slow(x):
            # Both processes get here before either stores: wait for the other.
            open({str(gate)!r} + sys.argv[1], "w").close()
            other = {str(gate)!r} + ("b" if sys.argv[1] == "a" else "a")
            deadline = time.time() + 30
            while not os.path.exists(other) and time.time() < deadline:
                time.sleep(0.01)
            return {{"x": x, "by": sys.argv[1]}}
        print(json.dumps(slow(5)))
    """)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda who: run_python(code, project, who), ["a", "b"]))
    results = []
    for run in runs:
        assert run.returncode == 0, run.stderr
        results.append(__import__("json").loads(run.stdout))
    assert sorted(r["by"] for r in results) == ["a", "b"]  # both computed, both returned
    kept = czcache.LocalCache(cache_dir).keys("memo/")
    assert len(kept) == 1
    # The kept copy is one of the two, and a third process hits it.
    again = run_python(code, project, "c")
    assert again.returncode == 0, again.stderr
    assert __import__("json").loads(again.stdout)["by"] in ("a", "b")


def test_file_hashes_are_remembered_across_processes_in_the_stat_cache(project, tmp_path):
    data = tmp_path / "big-input.bin"
    data.write_bytes(os.urandom(1 << 20))
    old = os.stat(data).st_mtime - 10
    os.utime(data, (old, old))  # clearly older than the hash: a stamp worth keeping
    first = czcache.hash_file(data)
    state = (tmp_path / "cache" / "state" / "python-stat.tsv").read_text()
    assert str(data) in state and first.split(":")[1] in state
    code = f"import czcache; print(czcache.hash_file({str(data)!r}))"
    again = run_python(code, project)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first
    data.write_bytes(b"changed")
    assert czcache.hash_file(data) == czcache.hash_bytes(b"changed")


def test_a_stored_value_that_is_not_a_memoized_result_is_refused_naming_the_key(cache, tmp_path):
    @cache.memoize(name="f")
    def f(x):
        return x

    key = f.__cache_key__(1)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00not a result")
    cache.put(key, garbage)
    with pytest.raises(czcache.Error, match=f"{key}: not a memoized result"):
        f(1)
    unknown = tmp_path / "unknown"
    unknown.write_bytes(b'czc-memo/1\n{"format": "exe"}\nMZ')
    cache.put(key, unknown)
    with pytest.raises(czcache.Error, match="unknown result format 'exe'"):
        f(1)
