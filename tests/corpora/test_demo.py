"""The demo generator: layouts, labels of the level of theory, determinism."""

from __future__ import annotations

import json

import h5py
import numpy as np
from atomforge.corpora.demo import make_demo_corpora


def test_tiny_writes_every_corpus_with_level_of_theory(demo_dir):
    summary = json.loads((demo_dir / "demo.json").read_text())
    assert summary["size"] == "tiny" and summary["seed"] == 3
    assert all(summary["counts"][name] > 0 for name in ("oc20", "oc22", "ani1x", "transition1x", "rmd17"))
    assert "EMT" in (demo_dir / "README.md").read_text() and "GFN2-xTB" in (demo_dir / "README.md").read_text()
    for path in (demo_dir / "ani1x" / "ani1x-demo.h5", demo_dir / "transition1x" / "transition1x-demo.h5"):
        with h5py.File(path) as handle:
            assert "GFN2-xTB" in handle.attrs["level_of_theory"]
    assert sorted(p.name for p in (demo_dir / "oc20").iterdir()) == ["0.extxyz", "0.txt", "1.extxyz.xz", "1.txt.xz"]


def test_ani1x_layout_dtypes_and_nan_levels(demo_dir):
    with h5py.File(demo_dir / "ani1x" / "ani1x-demo.h5") as handle:
        group = handle[sorted(handle.keys())[0]]
        assert group["atomic_numbers"].dtype == np.uint8
        assert group["coordinates"].dtype == np.float32 and group["wb97x_dz.forces"].dtype == np.float32
        assert group["wb97x_dz.energy"].dtype == np.float64
        assert np.isnan(group["wb97x_tz.energy"][()]).all() and np.isnan(group["ccsd(t)_cbs.energy"][()]).all()


def test_same_seed_gives_identical_labels(tmp_path, demo_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_demo_corpora(tmp_path, "tiny", seed=3)
    assert (tmp_path / "oc20" / "0.extxyz").read_bytes() == (demo_dir / "oc20" / "0.extxyz").read_bytes()
    with h5py.File(tmp_path / "ani1x" / "ani1x-demo.h5") as a, h5py.File(demo_dir / "ani1x" / "ani1x-demo.h5") as b:
        for name in a:
            np.testing.assert_allclose(a[name]["wb97x_dz.energy"][()], b[name]["wb97x_dz.energy"][()], rtol=1e-12)
