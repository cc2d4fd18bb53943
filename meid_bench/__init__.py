"""meid-bench: long-tailed multi-label video recognition benchmarks, reference models and one evaluation.

    split = meid_bench.load_split("splits/charadeslt")      # verified on load
    result = meid_bench.Evaluator(split, "test").eval(video_ids, scores)
    run = meid_bench.load_run("runs/charadeslt-meid-seed0")  # recipe, metrics and the trained model (needs torch)
"""

from meid_bench._version import __version__

import logging as _logging

from meid_bench.build.split_io import Split, load_split
from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import Evaluator

_logging.getLogger(__name__).addHandler(_logging.NullHandler())  # a library prints nothing unless asked to

__all__ = ["__version__", "Evaluator", "MeidBenchError", "Split", "load_run", "load_split"]


def __getattr__(name: str):
    # load_run needs torch; importing meid_bench (the build side, the evaluator) must not.
    if name == "load_run":
        from meid_bench.train.restore import load_run

        return load_run
    raise AttributeError(f"module 'meid_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"load_run"})
