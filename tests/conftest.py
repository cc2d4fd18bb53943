"""Shared fixtures: where the real annotation files are, and small annotation sets written in the real formats."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from meid_bench.build.synthetic import CHARADES_HEADER, write_synthetic_charades

def _click_8_2_test_runner() -> None:
    """The tests read a command's stderr apart from its stdout (``result.stderr``) and find messages of both in
    ``result.output``, as click 8.2's CliRunner gives them. Under click 8.1 (the floor of setup.cfg), make its
    CliRunner do the same, so that the suite runs on the oldest click the package supports."""
    import inspect

    import click.testing

    if "mix_stderr" not in inspect.signature(click.testing.CliRunner.__init__).parameters:
        return  # click 8.2 or newer

    class Result(click.testing.Result):
        @property
        def output(self) -> str:  # click 8.2: both streams (here one after the other, not interleaved)
            return self.stdout + self.stderr

    class CliRunner(click.testing.CliRunner):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("mix_stderr", False)
            super().__init__(*args, **kwargs)

        def invoke(self, *args, **kwargs):
            result = super().invoke(*args, **kwargs)
            result.__class__ = Result
            return result

    click.testing.CliRunner = CliRunner


_click_8_2_test_runner()
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def data_roots() -> list[Path]:
    """Where the licensed annotation folders (charades/, videolt/) are looked for, in order: $MEID_BENCH_DATA (as
    `meid-bench build` reads it) when set, else ./data of the checkout (the CLI's default), then a shared data
    folder beside the checkout."""
    configured = os.environ.get("MEID_BENCH_DATA")
    if configured:
        return [Path(configured)]
    return [REPO / "data", SHARED_DATA]


def pytest_configure(config: pytest.Config) -> None:
    # CI runs these a second time under ATEN_CPU_CAPABILITY=default (PyTorch's portable kernels): a test that pins
    # bytes which depend on the CPU's instruction set then fails on the CI machine too, not only on a user's.
    config.addinivalue_line("markers", "determinism: same inputs, same bytes on one machine; published figures "
                                       "within a stated tolerance on any machine")


def real_data(name: str) -> Path:
    """The folder ``name`` of the first data root that has it; the test is skipped where the licensed files are
    not present."""
    for root in data_roots():
        if (root / name).is_dir():
            return root / name
    looked = " or ".join(str(root / name) for root in data_roots())
    pytest.skip(f"real annotation files not present at {looked}; set MEID_BENCH_DATA to the folder holding {name}/")


@pytest.fixture
def charades_real() -> Path:
    return real_data("charades")


@pytest.fixture
def videolt_real() -> Path:
    return real_data("videolt")


@pytest.fixture
def synthetic_charades(tmp_path: Path) -> Path:
    return write_synthetic_charades(tmp_path / "annotations", num_classes=12, train_videos=300, test_videos=120)


def write_charades_csv(path: Path, rows: list[dict], header: list[str] = CHARADES_HEADER) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\r\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({name: row.get(name, "") for name in header})
    return path


def write_classes(folder: Path, num_classes: int) -> Path:
    path = folder / "Charades_v1_classes.txt"
    path.write_text("".join(f"c{k:03d} Made-up class {k}\n" for k in range(num_classes)))
    return path


@pytest.fixture(scope="session")
def hostile_base(tmp_path_factory) -> Path:
    """A small valid workspace (split, feature store, npy sources, a finished run) for the hostile-input tests;
    each test copies it (``hostile_support.workspace``) before damaging it."""
    from hostile_support import build_base

    return build_base(tmp_path_factory.mktemp("hostile-base"))


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` run only where PyTorch sees a CUDA GPU (``pytest -m cuda`` runs just them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible to PyTorch")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
