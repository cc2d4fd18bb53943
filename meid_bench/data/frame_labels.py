"""Per-frame labels for batch paths: a store's labels, bit-packed, held on the device and unpacked per batch.

MEID's label-routed distillation reads the labels of the very frames a batch draws. The resident and streamed
paths both address frames by store row, so one table indexed by store row serves both: a store of C classes takes
ceil(C / 8) bytes per frame (20 for Charades' 157), a small fraction of the frames themselves.
"""

from __future__ import annotations

import numpy as np
import torch

from meid_bench.build.features.frames import pack_frame_labels
from meid_bench.build.features.store import FeatureStore


class PackedFrameLabels:
    """The per-frame labels of the videos at ``positions`` of ``store``, by store row, on ``device``."""

    def __init__(self, store: FeatureStore, positions: np.ndarray, device: torch.device) -> None:
        self.num_classes = store.num_classes
        table = np.zeros((store.total_frames, (self.num_classes + 7) // 8), dtype=np.uint8)
        for position in np.asarray(positions, dtype=np.int64):
            lo, hi = int(store.offsets[position]), int(store.offsets[position + 1])
            table[lo:hi] = pack_frame_labels(store.read_frame_labels_at(int(position)))
        self.table = torch.from_numpy(table).to(device)
        self.bits = torch.arange(8, dtype=torch.uint8, device=device)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """float32 [*rows.shape, C]: the 0/1 labels of store rows ``rows`` (int64, on the table's device)."""
        packed = self.table[rows]
        unpacked = (packed.unsqueeze(-1) >> self.bits) & 1  # little bit order, as stored
        return unpacked.flatten(-2)[..., :self.num_classes].float()
