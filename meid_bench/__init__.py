"""meid-bench: long-tailed multi-label video recognition benchmarks, reference models and one evaluation."""

__version__ = "0.1.0"

from meid_bench.errors import MeidBenchError
from meid_bench.build.split_io import Split, load_split

__all__ = ["__version__", "MeidBenchError", "Split", "load_split"]
