"""The design's own scenario, end to end: a benchmark harness's Dataset writes a real
.h5ad with anndata and stores it through a synchronized cache over S3; a second process
with an empty local cache loads it through CopyToLocalCache([share, s3]) with the known
hash, where the cluster share holds a corrupt copy that must be skipped."""

import json
import textwrap

import pytest

import czcache

from conftest import run_python

anndata = pytest.importorskip("anndata")
np = pytest.importorskip("numpy")

DATASET = textwrap.dedent('''
    import anndata, numpy as np, pandas as pd

    class Dataset:
        """A small dataset as a benchmark harness defines one."""
        key = "datasets/pbmc/pbmc_small.h5ad"

        @staticmethod
        def build(path):
            rng = np.random.default_rng(7)
            adata = anndata.AnnData(
                X=rng.poisson(1.0, size=(120, 40)).astype(np.float32),
                obs=pd.DataFrame({"cell_type": rng.choice(["T", "B", "NK"], 120)},
                                 index=[f"cell{i}" for i in range(120)]),
                var=pd.DataFrame(index=[f"gene{j}" for j in range(40)]),
            )
            adata.write_h5ad(path)
            return adata

        @classmethod
        def load_data(cls, cache, known_hash=None):
            return anndata.read_h5ad(cache.get(cls.key, hash=known_hash))
''')


def test_a_dataset_stored_through_s3_loads_in_another_process_past_a_corrupt_share(
    project, tmp_path, s3
):
    bucket = s3()
    namespace = {}
    exec(DATASET, namespace)
    Dataset = namespace["Dataset"]

    # The harness's first run: build the file, store it through the synchronized cache.
    built = tmp_path / "pbmc_small.h5ad"
    original = Dataset.build(built)
    writer = czcache.SynchronizedRemoteAndLocalCache(
        bucket, local=czcache.LocalCache(tmp_path / "writer-cache")
    )
    assert writer.put(Dataset.key, built, if_absent=True)
    known = writer.get_hash(Dataset.key)
    assert known == czcache.hash_file(built)
    assert Dataset.load_data(writer, known).shape == (120, 40)  # a local hit

    # The cluster share holds a copy cut short (a failed rsync).
    share = tmp_path / "share"
    (share / "datasets" / "pbmc").mkdir(parents=True)
    (share / "datasets" / "pbmc" / "pbmc_small.h5ad").write_bytes(built.read_bytes()[:5000])

    reader = DATASET + textwrap.dedent(f'''
        import json, warnings, czcache
        share = czcache.ReadOnlyFilesystemStorage({str(share)!r})
        bucket = czcache.S3Storage({bucket.url!r}, endpoint={bucket.client.meta.endpoint_url!r})
        cache = czcache.CopyToLocalCache([share, bucket],
                                         local=czcache.LocalCache({str(tmp_path / "reader-cache")!r}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            adata = Dataset.load_data(cache, known_hash={known!r})
        path = cache.get(Dataset.key, hash={known!r})
        print(json.dumps({{
            "shape": list(adata.shape),
            "sum": float(adata.X.sum()),
            "cell_types": sorted(set(adata.obs["cell_type"])),
            "warnings": [str(w.message) for w in caught if issubclass(w.category, czcache.CzcacheWarning)],
            "name": path.name,
            "stats": [cache.stats().hits, cache.stats().misses],
        }}))
    ''')
    run = run_python(reader, project)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["shape"] == [120, 40]
    assert seen["sum"] == pytest.approx(float(original.X.sum()))
    assert seen["cell_types"] == sorted(set(original.obs["cell_type"]))
    assert seen["name"] == "pbmc_small.h5ad"
    assert len(seen["warnings"]) == 1 and "not the expected" in seen["warnings"][0], seen
    assert str(share) in seen["warnings"][0]
    assert seen["stats"] == [1, 1]  # downloaded once from S3, then a local hit
