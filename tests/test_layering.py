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


@pytest.mark.parametrize("module", ["meid_bench.metrics", "meid_bench.evaluator", "meid_bench.runs"])
def test_scoring_does_not_load_plotting(module):
    assert "matplotlib" not in imported_after([module])


def loaded_modules(modules: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(' '.join(sorted(sys.modules)))")
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


TRAINING_MODULES = ["meid_bench.train.loop", "meid_bench.train.restore", "meid_bench.train.sweep",
                    "meid_bench.train.config", "meid_bench.cli.train"]


def test_training_never_imports_report():
    # The run folder's format sits below both (meid_bench.runs): the writer must not depend on its reader.
    loaded = loaded_modules(TRAINING_MODULES)
    assert not {m for m in loaded if m == "meid_bench.report" or m.startswith("meid_bench.report.")}


def test_the_registry_and_option_parser_are_plain_python():
    # Every side (build included) may name components and parse options without torch.
    loaded = imported_after(["meid_bench.registry", "meid_bench.options", "meid_bench._version"])
    assert "torch" not in loaded and "matplotlib" not in loaded
