"""The canonical video table every reader produces: one row per video, columnar and ragged.

Segments and labels are ragged per video; they are kept as flat arrays with offsets (the Arrow list layout), so
that selection, statistics and writing never loop over videos in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from meid_bench.build.split_io import VIDEO_SCHEMA


@dataclass
class VideoTable:
    """Videos of one source. ``labels`` of video i are ``label_values[label_offsets[i]:label_offsets[i + 1]]``
    (sorted, unique class ids); its segments likewise through ``segment_offsets``. ``extra`` holds source columns
    (subject, scene, egocentric, paired_video, ...) as equal-length arrays (object arrays may hold None)."""

    video_ids: np.ndarray  # object array of str
    subset: np.ndarray  # object array: "train", "test" or "validate"
    duration: np.ndarray  # float64 seconds, NaN when unknown
    label_offsets: np.ndarray  # int64 [V + 1]
    label_values: np.ndarray  # int32
    segment_offsets: np.ndarray  # int64 [V + 1]
    segment_classes: np.ndarray  # int32
    segment_starts: np.ndarray  # float64
    segment_ends: np.ndarray  # float64
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def num_labels(self) -> np.ndarray:
        return np.diff(self.label_offsets)

    def labels_of(self, index: int) -> np.ndarray:
        return self.label_values[self.label_offsets[index]:self.label_offsets[index + 1]]

    def take(self, rows: np.ndarray) -> "VideoTable":
        """The videos at ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        label_offsets, label_index = _ragged_take(self.label_offsets, rows)
        segment_offsets, segment_index = _ragged_take(self.segment_offsets, rows)
        return VideoTable(
            video_ids=self.video_ids[rows],
            subset=self.subset[rows],
            duration=self.duration[rows],
            label_offsets=label_offsets,
            label_values=self.label_values[label_index],
            segment_offsets=segment_offsets,
            segment_classes=self.segment_classes[segment_index],
            segment_starts=self.segment_starts[segment_index],
            segment_ends=self.segment_ends[segment_index],
            extra={name: values[rows] for name, values in self.extra.items()},
        )

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Videos per class (int64 [num_classes])."""
        return np.bincount(self.label_values, minlength=num_classes).astype(np.int64)

    def annotated_seconds(self, num_classes: int) -> np.ndarray:
        """Seconds per class covered by at least one segment, summed over videos (overlaps counted once)."""
        if len(self.segment_classes) == 0:
            return np.zeros(num_classes)
        video_of_segment = np.repeat(np.arange(len(self)), np.diff(self.segment_offsets))
        group = video_of_segment.astype(np.int64) * num_classes + self.segment_classes
        # Offsetting each (video, class) group far apart lets one running maximum merge overlaps group by group.
        span = float(np.nanmax(self.segment_ends)) + 1.0
        starts = group * span + self.segment_starts
        ends = group * span + self.segment_ends
        order = np.lexsort((ends, starts))
        starts, ends, group = starts[order], ends[order], group[order]
        reach = np.maximum.accumulate(ends)
        previous_reach = np.concatenate([[-np.inf], reach[:-1]])
        covered = np.clip(ends - np.maximum(starts, previous_reach), 0.0, None)
        return np.bincount(group % num_classes, weights=covered, minlength=num_classes)

    def to_arrow(self) -> pa.Table:
        columns = [
            pa.array(self.video_ids.tolist(), type=pa.string()),
            pa.ListArray.from_arrays(pa.array(self.label_offsets.astype(np.int32)),
                                     pa.array(self.label_values, type=pa.int32())),
            pa.array(self.duration, type=pa.float64(), from_pandas=True),
            pa.ListArray.from_arrays(pa.array(self.segment_offsets.astype(np.int32)),
                                     pa.array(self.segment_classes, type=pa.int32())),
            pa.ListArray.from_arrays(pa.array(self.segment_offsets.astype(np.int32)),
                                     pa.array(self.segment_starts, type=pa.float64())),
            pa.ListArray.from_arrays(pa.array(self.segment_offsets.astype(np.int32)),
                                     pa.array(self.segment_ends, type=pa.float64())),
        ]
        schema = VIDEO_SCHEMA
        for name, values in self.extra.items():
            # Source columns are text (None where empty) or flags; an all-empty column is still typed text.
            array = pa.array(values.tolist(), type=pa.string() if values.dtype == object else None)
            columns.append(array)
            schema = schema.append(pa.field(name, array.type))
        return pa.Table.from_arrays(columns, schema=schema)


def _ragged_take(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New offsets and the flat element indices of the ragged rows ``rows``."""
    lengths = offsets[rows + 1] - offsets[rows]
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    starts = np.repeat(offsets[rows] - new_offsets[:-1], lengths)
    return new_offsets, starts + np.arange(new_offsets[-1])


def concat_tables(tables: list[VideoTable]) -> VideoTable:
    def ragged(name_offsets: str, names: tuple[str, ...]):
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for table in tables:
            table_offsets = getattr(table, name_offsets)
            offsets.append(table_offsets[1:] + base)
            base += table_offsets[-1]
        values = {name: np.concatenate([getattr(t, name) for t in tables]) for name in names}
        return np.concatenate(offsets), values

    label_offsets, labels = ragged("label_offsets", ("label_values",))
    segment_offsets, segments = ragged("segment_offsets", ("segment_classes", "segment_starts", "segment_ends"))
    extra_names = list(tables[0].extra)
    return VideoTable(
        video_ids=np.concatenate([t.video_ids for t in tables]),
        subset=np.concatenate([t.subset for t in tables]),
        duration=np.concatenate([t.duration for t in tables]),
        label_offsets=label_offsets,
        segment_offsets=segment_offsets,
        extra={name: np.concatenate([t.extra[name] for t in tables]) for name in extra_names},
        **labels,
        **segments,
    )
