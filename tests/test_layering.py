"""The architecture's one-way layering: the build side never imports torch or matplotlib, and reading runs or
scores never pulls in plotting."""

from __future__ import annotations

import subprocess
import sys

import pytest

BUILD_MODULES = ["meid_bench", "meid_bench.build.protocol", "meid_bench.build.reference", "meid_bench.build.summary",
                 "meid_bench.build.synthetic", "meid_bench.build.features.pack", "meid_bench.build.features.synth",
                 "meid_bench.build.features.store", "meid_bench.build.features.probe", "meid_bench.cli.build"]


def imported_after(modules: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_build_side_never_imports_torch_or_matplotlib():
    loaded = imported_after(BUILD_MODULES)
    assert "torch" not in loaded and "matplotlib" not in loaded


@pytest.mark.parametrize("module", ["meid_bench.metrics", "meid_bench.evaluator", "meid_bench.report.runs"])
def test_scoring_does_not_load_plotting(module):
    assert "matplotlib" not in imported_after([module])
