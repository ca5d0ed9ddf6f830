"""The stage cache (compress/cache.py): a recipe run twice trains once; a longer recipe that shares
a prefix reuses it; rows and model outputs match the uncached run."""

from __future__ import annotations

import numpy as np

from edgekit.compress.cache import StageCache
from edgekit.compress.pipeline import run_recipe
from edgekit.data import load_data
from edgekit.source import load
from ektest import REPO


def _recipe(tmp_path, name, stages):
    p = tmp_path / name
    p.write_text("\n".join(f"[[stage]]\n{s}" for s in stages))
    return p


def test_second_run_is_served_from_the_cache(digits_example, tmp_path):
    from edgekit.demo import digits_data
    xt, yt, _, _ = digits_data()
    np.savez(tmp_path / "train.npz", x=xt[:300], labels=yt[:300])
    h = load(str(digits_example["model"]))
    tr = load_data(tmp_path / "train.npz", h, role="training")
    va = load_data(digits_example["validation"], h, role="validation")
    prune = 'kind = "prune"\nmethod = "structured"\nratio = 0.3\nfinetune_epochs = 1'
    one = _recipe(tmp_path, "one.toml", [prune])
    two = _recipe(tmp_path, "two.toml", [prune, 'kind = "prune"\nmethod = "magnitude"\nratio = 0.5\nfinetune_epochs = 0'])
    cache = StageCache(tmp_path / "cache")
    a, rows_a = run_recipe(h, one, tr, va, progress=False, cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    b, rows_b = run_recipe(h, one, tr, va, progress=False, cache=cache)
    assert (cache.hits, cache.misses) == (1, 1) and rows_b[1]["cache"] == "hit"
    assert rows_b[1]["accuracy"] == rows_a[1]["accuracy"] and rows_b[1]["params"] == rows_a[1]["params"]
    x = va.sample(0)
    ra, rb = a.runner()(x)[0], b.runner()(x)[0]
    assert np.array_equal(ra, rb)
    c, rows_c = run_recipe(h, two, tr, va, progress=False, cache=cache)  # the shared prefix from the cache
    assert (cache.hits, cache.misses) == (2, 2) and rows_c[1].get("cache") == "hit" and "cache" not in rows_c[2]
    s = cache.stats()
    assert 0 < s["share_served"] < 1 and s["seconds_saved"] > 0
    assert REPO.is_dir()
