"""A small synthetic annotation set in the Charades v1 file format, for the demo and for tests.

Nothing here comes from Charades: class names, ids and segments are generated from a seed. The set is long-tailed
(Zipf class popularity), multi-label with scene-driven co-occurrence, and it carries one of each real-file quirk
(a video without actions, a segment that ends before it starts, segments past the video's length) so that the
demo exercises the same code paths as a real build.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CHARADES_HEADER = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                   "descriptions", "actions", "length"]
SCENES = ["Kitchen", "Bedroom", "Living room", "Bathroom", "Hallway", "Garage"]


def _video_rows(rng: np.random.Generator, count: int, prefix: str, popularity: np.ndarray,
                scene_affinity: np.ndarray, subjects: list[str]) -> list[list[str]]:
    rows = []
    num_classes = len(popularity)
    for index in range(count):
        scene = int(rng.integers(len(SCENES)))
        weights = popularity * scene_affinity[scene]
        weights = weights / weights.sum()
        num_labels = int(min(num_classes, 1 + rng.poisson(2.5)))
        classes = rng.choice(num_classes, size=num_labels, replace=False, p=weights)
        length = float(np.round(rng.uniform(12.0, 45.0), 2))
        actions = []
        for k in classes:
            start = float(np.round(rng.uniform(0.0, length * 0.8), 2))
            end = float(np.round(min(length + 2.0, start + rng.uniform(2.0, 15.0)), 2))
            actions.append(f"c{k:03d} {start:.2f} {end:.2f}")
        rows.append([f"{prefix}{index:05d}", subjects[int(rng.integers(len(subjects)))], SCENES[scene], "6", "7",
                     "Yes", "synthetic script", "", "synthetic description", ";".join(actions), f"{length:.2f}"])
    return rows


def write_synthetic_charades(folder: Path, num_classes: int = 24, train_videos: int = 900, test_videos: int = 300,
                             seed: int = 0) -> Path:
    """Write ``Charades_v1_{train,test}.csv`` and ``Charades_v1_classes.txt`` into ``folder`` (created)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    popularity = (np.arange(num_classes) + 1.0) ** -1.1
    scene_affinity = rng.gamma(0.7, 1.0, size=(len(SCENES), num_classes)) + 0.05
    # Train and test subjects are disjoint, as in Charades.
    train_subjects = [f"S{i:03d}" for i in range(40)]
    test_subjects = [f"S{i:03d}" for i in range(40, 52)]
    subsets = {
        "train": _video_rows(rng, train_videos, "TR", popularity, scene_affinity, train_subjects),
        "test": _video_rows(rng, test_videos, "TE", popularity, scene_affinity, test_subjects),
    }
    # Real-file quirks, one each: an empty `actions`, a reversed segment (end before start).
    subsets["train"][0][9] = ""
    first = subsets["train"][1][9].split(";")[0].split()
    subsets["train"][1][9] = ";".join([f"{first[0]} {first[2]} {first[1]}"] + subsets["train"][1][9].split(";")[1:])
    # Every class gets at least a few test positives and train videos, so every class is evaluable.
    for subset, rows in subsets.items():
        for k in range(num_classes):
            row = rows[(7 * k + 3) % len(rows)]
            length = float(row[10])
            row[9] = ";".join(filter(None, [row[9], f"c{k:03d} {length * 0.1:.2f} {length * 0.6:.2f}"]))
    for subset, rows in subsets.items():
        with open(folder / f"Charades_v1_{subset}.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(CHARADES_HEADER)
            writer.writerows(rows)
    with open(folder / "Charades_v1_classes.txt", "w") as handle:
        for k in range(num_classes):
            handle.write(f"c{k:03d} Synthetic action {k}\n")
    return folder


CHARADES_EGO_HEADER = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "descriptions",
                       "actions", "length", "egocentric", "charades_video"]


def write_synthetic_charades_ego(folder: Path, num_classes: int = 24, train_scripts: int = 450,
                                 test_scripts: int = 150, seed: int = 0) -> Path:
    """Write ``CharadesEgo_v1_{train,test}.csv`` (v1 columns) and ``Charades_v1_classes.txt`` into ``folder``.

    Each script is filmed twice, as in Charades-Ego: a third-person video ``ABCDE`` and its first-person partner
    ``ABCDEEGO`` with the same actions (segments jittered); ``charades_video`` names a made-up Charades id.
    """
    staging = Path(folder) / ".charades-format"
    write_synthetic_charades(staging, num_classes, train_scripts, test_scripts, seed)
    rng = np.random.default_rng([seed, 7])
    for subset in ("train", "test"):
        with open(staging / f"Charades_v1_{subset}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        out_rows = []
        for row in rows:
            for ego in (False, True):
                actions = row["actions"]
                if ego and actions:  # the partner video: same actions, times shifted a little
                    items = []
                    for item in actions.split(";"):
                        key, start, end = item.split()
                        shift = float(rng.uniform(-0.5, 0.5))
                        items.append(f"{key} {max(0.0, float(start) + shift):.2f} {max(0.0, float(end) + shift):.2f}")
                    actions = ";".join(items)
                out_rows.append({**{k: row[k] for k in CHARADES_EGO_HEADER if k in row}, "actions": actions,
                                 "id": row["id"] + ("EGO" if ego else ""), "egocentric": "Yes" if ego else "No",
                                 "charades_video": f"CH{row['id']}"})
        with open(Path(folder) / f"CharadesEgo_v1_{subset}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CHARADES_EGO_HEADER, lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(out_rows)
    (staging / "Charades_v1_classes.txt").replace(Path(folder) / "Charades_v1_classes.txt")
    for leftover in staging.iterdir():
        leftover.unlink()
    staging.rmdir()
    return Path(folder)


# Generic English verbs and objects for the synthetic class mapping (nothing from Charades' files): the first four
# verbs form two opposite pairs, as simulator v2 expects of a Charades verb list.
_SYNTHETIC_VERBS = ("open", "close", "take", "put", "hold", "watch", "eat", "sit")
_SYNTHETIC_OBJECTS = ("None", "door", "cup", "book", "box", "chair")


def write_synthetic_charades_mapping(folder: Path, num_classes: int = 24) -> Path:
    """Write ``Charades_v1_mapping.txt``, ``Charades_v1_verbclasses.txt`` and ``Charades_v1_objectclasses.txt``
    (the Charades formats) for classes ``c000``.. into ``folder``: consecutive classes 4k..4k+3 are (object k, open),
    (object k, close), (object k, take), (object k, put) until objects run out, then other verbs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Charades_v1_verbclasses.txt").write_text(
        "".join(f"v{i:03d} {name}\n" for i, name in enumerate(_SYNTHETIC_VERBS)))
    (folder / "Charades_v1_objectclasses.txt").write_text(
        "".join(f"o{i:03d} {name}\n" for i, name in enumerate(_SYNTHETIC_OBJECTS)))
    lines = []
    for k in range(num_classes):
        obj, verb = 1 + (k // 4) % (len(_SYNTHETIC_OBJECTS) - 1), k % 4
        if k >= 4 * (len(_SYNTHETIC_OBJECTS) - 1):
            obj, verb = k % len(_SYNTHETIC_OBJECTS), 4 + k % (len(_SYNTHETIC_VERBS) - 4)
        lines.append(f"c{k:03d} o{obj:03d} v{verb:03d}\n")
    (folder / "Charades_v1_mapping.txt").write_text("".join(lines))
    return folder
