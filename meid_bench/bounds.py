"""Bounds on numeric options, so that a value no reasonable run needs is a clear error here rather than an
overflow, a RecursionError or a 269 GiB allocation deep in a library."""

from __future__ import annotations

from meid_bench.errors import MeidBenchError

# torch.manual_seed takes at most 2**64 - 1 and numpy's generators any non-negative integer; runs add small offsets
# (the rank, +1 for a second stream) to the seed, so 2**63 - 1 leaves room for all of them.
SEED_MAX = 2 ** 63 - 1
# Threads reading batches or decoding frames: more than this only contends for the same cores and memory.
WORKERS_MAX = 64
# Feature frames per second: video is recorded at up to a few hundred frames per second; nothing samples more.
FPS_MAX = 1000.0
# Nesting of one --set value (a YAML list or mapping): recipes nest three levels; deeper is a mistake.
SET_DEPTH_MAX = 8
# Training processes one sweep runs at once.
JOBS_MAX = 256
# Frames (or clips) through an extraction backbone at once: a 4096-frame batch of 224 x 224 images is already 2.5 GB.
EXTRACT_BATCH_MAX = 4096


def check_seed(value: int, option: str = "--seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise MeidBenchError(f"{option} {value}: a seed must be an integer from 0 to {SEED_MAX} (2**63 - 1)")
    return value


def check_int_range(value: int, option: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MeidBenchError(f"{option} {value}: must be an integer from {low} to {high}")
    return value


def nesting_depth(value: object, limit: int = SET_DEPTH_MAX + 1) -> int:
    """How deeply lists and mappings nest in ``value`` (a scalar: 0), counted up to ``limit`` (iteratively: a value
    nested thousands deep must not exhaust the stack here either)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest >= limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return deepest
