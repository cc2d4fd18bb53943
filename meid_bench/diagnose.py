"""Diagnostics of trained runs: what MEID's parts see and do, beyond mAP (docs/results.md uses them).

- **Mirrored-pair AP** (from test predictions): for each mirrored class pair (a, b) - the same object with opposite
  verbs, e.g. opening and closing a door - the test videos labelled with exactly one of the two; the AP of the score
  difference s_a - s_b for telling a's videos from b's, and of s_b - s_a the other way, averaged over both directions
  and all pairs with videos on both sides. Chance is the mean share of positives. On simulator v2 such pairs differ
  only in temporal order, so order-blind models stay near chance.
- **Per-expert pair AP** (MEID runs, from the checkpoint on the test videos of the pairs): the same for expert 1's
  logits, expert 2's and the fused ones; beside it the **whole-video probe ceiling**
  (meid_bench.build.features.probe.whole_video_pair_probe on the run's store: mean-only, order-blind and
  order-aware AP), what a video-level model that pools a mean and a half contrast can reach.
- **Complementary-frame-selection retention** (MEID runs, from the checkpoint): on the chosen subset's videos, the
  share of frames of each kind (tail-class, head-class, background) that expert 2's selection keeps, against
  ``cfs_ratio`` for a random selection; and the share of background among all frames and among the kept ones.
- **Attention against activity**: expert 1's (or the attention baseline's) attention weight times the number of
  frames (1 = uniform), by number of classes active on the frame, and the median per-video Spearman correlation
  between attention and frame norm.

Pairs come from the store (simulator v2 records them) or from a Charades annotation folder (``annotations``);
per-frame labels from the store or from the split's segments at the store's frame rate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meid_bench.build.features.frames import active_classes, frame_times
from meid_bench.build.features.probe import mirrored_pairs_of
from meid_bench.build.features.store import FeatureStore
from meid_bench.build.split_io import Split
from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import Evaluator, read_predictions
from meid_bench.metrics import average_precision
from meid_bench.runs import Run, load_run_split, read_run

ACTIVITY_BINS = ("0", "1", "2", "3+")


@dataclass
class Diagnosis:
    """One run's diagnostics (None where a diagnostic does not apply to the run)."""

    run: str
    method: str
    seed: int | None
    pair_ap: float | None = None
    pair_chance: float | None = None
    pairs_evaluated: int = 0
    cfs_retention: dict[str, float] | None = None
    cfs_ratio: float | None = None
    background_share: dict[str, float] | None = None  # {"all": share of all frames, "kept": of the kept frames}
    attention_by_activity: dict[str, float] | None = None
    attention_norm_spearman: float | None = None
    expert_pair_ap: dict[str, float] | None = None  # MEID: {"expert1", "expert2", "fused"}
    pair_ceiling: dict[str, float] | None = None  # the whole-video probe: {"mean_only", "order_blind", "order_aware"}
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def mirrored_pair_ap(scores: np.ndarray, targets: np.ndarray, pairs: Sequence[tuple[int, int]]
                     ) -> tuple[float | None, float | None, int]:
    """(mean pair AP, its chance level, pairs evaluated) over class-index pairs; see the module docstring."""
    values, chances = [], []
    for a, b in pairs:
        only_a = (targets[:, a] > 0) & (targets[:, b] == 0)
        only_b = (targets[:, b] > 0) & (targets[:, a] == 0)
        if not only_a.any() or not only_b.any():
            continue
        keep = only_a | only_b
        difference = (scores[keep, a] - scores[keep, b]).astype(np.float64)
        is_a = only_a[keep].astype(np.float64)
        both = np.stack([difference, -difference], axis=1)
        labels = np.stack([is_a, 1.0 - is_a], axis=1)
        values.append(float(np.mean(average_precision(both, labels))))
        chances.append(float(np.mean(labels.mean(axis=0))))
    if not values:
        return None, None, 0
    return float(np.mean(values)), float(np.mean(chances)), len(values)


def pairs_for(store: FeatureStore, split: Split, annotations: str | os.PathLike | None, required: bool = True
              ) -> list[tuple[int, int]] | None:
    """Class-index pairs: from ``annotations`` when given, else those the (v2) store records.

    A store that records none (simulator v1, extracted features) without ``annotations`` is an error when the pairs
    are ``required``; otherwise None (no pair AP for the run)."""
    keys = [str(key) for key in split.classes["class_key"]]
    named = mirrored_pairs_of(store, keys, annotations, required)
    if named is None:
        return None
    index = {key: i for i, key in enumerate(keys)}
    return [(index[a], index[b]) for a, b in named if a in index and b in index]


def _frame_activity(store: FeatureStore, split: Split, subset: str) -> list[np.ndarray]:
    """Per video of ``subset`` (table order), the bool [frames, classes] activity of every stored frame."""
    table = split.table(subset)
    out = []
    for video in table.itertuples(index=False):
        position = store.index_of(video.video_id)
        if store.has_frame_labels:
            out.append(store.read_frame_labels_at(position).astype(bool))
            continue
        if store.fps is None:
            raise MeidBenchError(f"{store.path}: holds no per-frame labels and no frame rate; the frame diagnostics "
                                 "need one of them (synthesise or pack with --frame-labels, or --fps)")
        frames = int(store.offsets[position + 1] - store.offsets[position])
        out.append(active_classes(video.segment_classes, video.segment_starts, video.segment_ends,
                                  frame_times(frames, store.fps), split.num_classes))
    return out


def _best_model(run: Run, split: Split) -> tuple[Any, Any]:
    """(the run's model at its best checkpoint, in eval mode; its recipe)."""
    from meid_bench.train.checkpoint import load_checkpoint
    from meid_bench.train.config import Recipe

    payload = load_checkpoint(run.path / "checkpoints" / "best.pt", expect_split=split.accepted_checksums)
    recipe = Recipe.from_dict(payload["recipe"], where=str(run.path / "checkpoints" / "best.pt"))
    model = recipe.model.create(payload["input_dim"], payload["num_classes"],
                                class_groups=split.classes["group"].to_numpy())
    model.load_state_dict(payload["model"])
    model.eval()
    return model, recipe


def expert_pair_ap(run: Run, split: Split, store: FeatureStore, pairs: Sequence[tuple[int, int]]
                   ) -> dict[str, float] | None:
    """MEID's pair AP per expert and fused, from the best checkpoint on the test videos showing exactly one class of
    a pair (the run's evaluation frames); None for other models or MEID without expert 2."""
    import torch

    from meid_bench.data import VideoFeatureDataset
    from meid_bench.models.meid import MEID

    model, recipe = _best_model(run, split)
    if not isinstance(model, MEID) or not model.config.expert2:
        return None
    targets = split.multi_hot("test")
    rows = sorted({int(v) for a, b in pairs for v in np.flatnonzero(targets[:, a] != targets[:, b])})
    dataset = VideoFeatureDataset(split, store, "test", recipe.data.eval_frames, train=False)
    logits: dict[str, list[np.ndarray]] = {"expert1": [], "expert2": [], "fused": []}
    with torch.no_grad():
        for start in range(0, len(rows), 128):
            features = torch.stack([dataset[i]["features"] for i in rows[start:start + 128]])
            out = model(features)
            logits["expert1"].append(out.extras["expert1_logits"].float().numpy())
            logits["expert2"].append(out.extras["expert2_logits"].float().numpy())
            logits["fused"].append(out.logits.float().numpy())
    found = {}
    for name, parts in logits.items():
        value, _, _ = mirrored_pair_ap(np.concatenate(parts), targets[rows], pairs)
        if value is not None:
            found[name] = value
    return found or None


def frame_diagnostics(run: Run, split: Split, store: FeatureStore, subset: str, max_videos: int) -> dict[str, Any]:
    """CFS retention and attention against activity from the run's best checkpoint (see the module docstring)."""
    import torch
    from scipy.stats import spearmanr

    from meid_bench.data import VideoFeatureDataset
    from meid_bench.models.meid import MEID

    model, recipe = _best_model(run, split)
    dataset = VideoFeatureDataset(split, store, subset, recipe.data.train_frames, train=False)
    activity = _frame_activity(store, split, subset)
    tail = split.classes["group"].to_numpy() == "tail"
    count = min(len(dataset), max_videos)
    kinds = {"tail": [0, 0], "head": [0, 0], "background": [0, 0], "any": [0, 0]}  # kept, all
    by_activity = {name: [] for name in ACTIVITY_BINS}
    correlations = []
    with torch.no_grad():
        for start in range(0, count, 128):
            rows = range(start, min(count, start + 128))
            items = [dataset[i] for i in rows]
            features = torch.stack([item["features"] for item in items])
            out = model(features)
            if "attention" not in out.extras:
                return {}
            weights = out.extras["attention"].numpy()
            chosen = out.extras.get("selected_frames")
            for j, row in enumerate(rows):
                frames = dataset.frame_indices(row)
                active = activity[row][frames]
                busy = active.sum(axis=1)
                scaled = weights[j] * len(frames)
                for name, mask in zip(ACTIVITY_BINS, (busy == 0, busy == 1, busy == 2, busy >= 3)):
                    by_activity[name].extend(scaled[mask].tolist())
                norms = np.linalg.norm(features[j].numpy(), axis=1)
                if np.ptp(weights[j]) > 0 and np.ptp(norms) > 0:
                    correlations.append(float(spearmanr(weights[j], norms)[0]))
                if chosen is not None and isinstance(model, MEID):
                    kept = np.zeros(len(frames), dtype=bool)
                    kept[chosen[j].numpy()] = True
                    is_tail = active[:, tail].any(axis=1)
                    is_head = active[:, ~tail].any(axis=1) & ~is_tail
                    for name, mask in (("tail", is_tail), ("head", is_head), ("background", busy == 0),
                                       ("any", np.ones(len(frames), dtype=bool))):
                        kinds[name][0] += int((kept & mask).sum())
                        kinds[name][1] += int(mask.sum())
    result: dict[str, Any] = {
        "attention_by_activity": {k: float(np.mean(v)) for k, v in by_activity.items() if v},
        "attention_norm_spearman": float(np.median(correlations)) if correlations else None,
    }
    if isinstance(model, MEID) and model.config.expert2:
        result["cfs_retention"] = {k: kept / total for k, (kept, total) in kinds.items() if total and k != "any"}
        if kinds["any"][0]:
            result["background_share"] = {"all": kinds["background"][1] / kinds["any"][1],
                                          "kept": kinds["background"][0] / kinds["any"][0]}
        result["cfs_ratio"] = model.config.cfs_ratio
        result["frames_selection"] = model.config.frame_selection
    return result


_CEILINGS: dict[tuple[str, str, int], dict[str, float]] = {}  # one whole-video probe per store, split and pair set


def pair_ceiling(split: Split, store: FeatureStore, pairs: Sequence[tuple[int, int]]) -> dict[str, float]:
    """The whole-video probe's AP (mean-only, order-blind, order-aware) on the run's store, computed once per store."""
    from meid_bench.build.features.probe import whole_video_pair_probe

    keys = [str(key) for key in split.classes["class_key"]]
    cache_key = (str(Path(store.path).resolve()), split.checksum, hash(tuple(pairs)))
    if cache_key not in _CEILINGS:
        found = whole_video_pair_probe(split, store, [(keys[a], keys[b]) for a, b in pairs])
        _CEILINGS[cache_key] = {name: found[name] for name in ("mean_only", "order_blind", "order_aware")}
    return _CEILINGS[cache_key]


def diagnose_run(run_dir: str | os.PathLike, annotations: str | os.PathLike | None = None, subset: str = "train",
                 max_videos: int = 2000, frames: bool = True, split_override: str | os.PathLike | None = None,
                 ceiling: bool = True) -> Diagnosis:
    """Every diagnostic that applies to the run in ``run_dir`` (``frames``: those that load the checkpoint;
    ``ceiling``: the whole-video probe beside the pair AP)."""
    run = read_run(run_dir)
    split = load_run_split(run, split_override)
    features = run.record.get("features", {})
    if not isinstance(features, dict) or not isinstance(features.get("path"), str):
        raise MeidBenchError(f"{run.path / 'run.json'}: field 'features.path' is missing; the run record is "
                             "incomplete")
    store = FeatureStore(features["path"])
    store.check_split(split)
    check_recorded_store(run, store)
    diagnosis = Diagnosis(run=run.name, method=run.method, seed=run.seed)
    source = run.predictions_path("test")
    if not source.is_file():
        raise MeidBenchError(f"{source}: missing; the run has no test predictions (did training finish?)")
    # Checked as `evaluate` checks them: every test video once, no other id, finite scores (a pair AP from half
    # the test set, or a KeyError on an id such as ../../x, would otherwise follow).
    evaluator = Evaluator(split, "test")
    video_ids, scores = read_predictions(source, evaluator.class_keys)
    scores = evaluator.checked_scores(video_ids, scores, str(source))
    targets = evaluator.targets
    checkpoint = run.path / "checkpoints" / "best.pt"
    # Without pairs the frame diagnostics still apply (VideoLT, extracted features); with --no-frames nothing would.
    pairs = pairs_for(store, split, annotations, required=not (frames and checkpoint.is_file()))
    if pairs is None:
        diagnosis.extra["pair_ap"] = (f"{store.path} records no mirrored class pairs; pass --annotations DIR (a "
                                      "Charades folder with the class mapping and verb files) for the pair AP")
    else:
        diagnosis.pair_ap, diagnosis.pair_chance, diagnosis.pairs_evaluated = mirrored_pair_ap(scores, targets, pairs)
        if ceiling and diagnosis.pairs_evaluated:
            diagnosis.pair_ceiling = pair_ceiling(split, store, pairs)
        if frames and checkpoint.is_file():
            diagnosis.expert_pair_ap = expert_pair_ap(run, split, store, pairs)
    if frames and checkpoint.is_file():
        found = frame_diagnostics(run, split, store, subset, max_videos)
        for key in ("cfs_retention", "cfs_ratio", "background_share", "attention_by_activity",
                    "attention_norm_spearman"):
            if key in found:
                setattr(diagnosis, key, found[key])
        if "frames_selection" in found:
            diagnosis.extra["frame_selection"] = found["frames_selection"]
    return diagnosis


def check_recorded_store(run: Run, store: FeatureStore) -> None:
    """The store must be the very file the run was trained on: run.json records its sha256 (a store replaced since
    by one of the same width would give figures from features the model never saw)."""
    from meid_bench.build.features.audit import audit_store

    features = run.record.get("features")
    recorded = features.get("sha256") if isinstance(features, dict) else None
    if not isinstance(recorded, str):
        return  # runs written before run.json recorded it: nothing to compare
    actual = audit_store(store).sha256
    if actual != recorded:
        raise MeidBenchError(f"{run.path / 'run.json'}: features.sha256 {recorded[:12]}... is not the sha256 of "
                             f"{store.path} ({actual[:12]}...): the feature store changed since the run was "
                             "trained; diagnose with the store the run was trained on")


def format_table(diagnoses: Sequence[Diagnosis]) -> str:
    """A plain-text table, one run per line."""
    header = (f"{'run':<40} {'pair AP':>8} {'chance':>7} {'pairs':>5}  {'CFS keeps tail/head/bg (random), bg share':<48} "
              f"{'attention x T by active classes 0/1/2/3+':<42} {'rho(att, norm)':>14}")
    lines = [header]
    for d in diagnoses:
        pair = f"{d.pair_ap:8.4f} {d.pair_chance:7.4f} {d.pairs_evaluated:5d}" if d.pair_ap is not None else \
            f"{'n/a':>8} {'':>7} {0:5d}"
        if d.cfs_retention:
            cfs = "/".join(f"{d.cfs_retention.get(k, float('nan')):.3f}" for k in ("tail", "head", "background"))
            cfs += f" ({d.cfs_ratio:.2f})"
            if d.background_share:
                cfs += f" bg {d.background_share['all']:.3f}->{d.background_share['kept']:.3f}"
        else:
            cfs = "n/a"
        if d.attention_by_activity:
            att = "/".join(f"{d.attention_by_activity[k]:.2f}" if k in d.attention_by_activity else "-"
                           for k in ACTIVITY_BINS)
        else:
            att = "n/a"
        rho = f"{d.attention_norm_spearman:14.3f}" if d.attention_norm_spearman is not None else f"{'n/a':>14}"
        lines.append(f"{d.run[:40]:<40} {pair}  {cfs:<48} {att:<42} {rho}")
    notes = sorted({d.extra["pair_ap"] for d in diagnoses if "pair_ap" in d.extra})
    lines.extend(f"pair AP n/a: {note}" for note in notes)
    experts = [d for d in diagnoses if d.expert_pair_ap or d.pair_ceiling]
    if experts:
        lines.append("")
        lines.append(f"{'run':<40} {'pair AP: expert 1':>17} {'expert 2':>9} {'fused':>7}   "
                     "whole-video probe: mean-only / order-blind / order-aware")
        for d in experts:
            got = d.expert_pair_ap or {}
            cells = " ".join(f"{got[k]:{w}.4f}" if k in got else f"{'n/a':>{w}}"
                             for k, w in (("expert1", 17), ("expert2", 9), ("fused", 7)))
            ceiling = ("/".join(f"{d.pair_ceiling[k]:.3f}" for k in ("mean_only", "order_blind", "order_aware"))
                       if d.pair_ceiling else "n/a")
            lines.append(f"{d.run[:40]:<40} {cells}   {ceiling}")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, diagnoses: Sequence[Diagnosis]) -> Path:
    from meid_bench.fileio import write_json_atomic

    path = Path(path)
    write_json_atomic(path, {"format": "meid-bench-diagnosis", "format_version": 1,
                             "runs": [d.to_dict() for d in diagnoses]})
    return path
