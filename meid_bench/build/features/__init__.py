"""Frame features: the HDF5 feature store, packers for released formats, and the proxy-feature simulator.

Plain numpy/h5py; the torch side lives in :mod:`meid_bench.data`.
"""

from __future__ import annotations

import os
from pathlib import Path

from meid_bench.build.features.pack import PACK_FORMATS, PackReport, pack_features
from meid_bench.build.features.store import FeatureStore, FeatureStoreWriter, STORE_DTYPES
from meid_bench.build.features.synth import SynthConfig, synthesize_features

DEFAULT_FEATURE_FILE = "features.h5"


def default_feature_path(split_path: str | os.PathLike) -> Path:
    """Where a split's default feature store lives: ``<split folder>/features.h5`` (what ``meid-bench train``
    loads without --features, and where ``meid-bench features synth`` writes without --out)."""
    return Path(split_path) / DEFAULT_FEATURE_FILE


__all__ = ["DEFAULT_FEATURE_FILE", "FeatureStore", "FeatureStoreWriter", "PACK_FORMATS", "PackReport",
           "STORE_DTYPES", "SynthConfig", "default_feature_path", "pack_features", "synthesize_features"]
