"""The torch side of features: datasets over a split and a feature store, samplers, batch paths."""

from meid_bench.data.dataset import CACHE_MODES, VideoFeatureDataset, make_loader, make_sampler, set_epoch
from meid_bench.data.frame_sampling import (draw_frames, epoch_generator, random_frame_indices, uniform_frame_indices,
                                            uniform_frames)
from meid_bench.data.resident import GpuResidentFeatures, frames_nbytes, load_frames
from meid_bench.data.samplers import (SAMPLERS, ClassBalancedSampler, InstanceSampler, SquareRootSampler, label_mask,
                                      label_masks)
from meid_bench.data.streamed import BatchGatherer, StreamedFeatures

__all__ = ["BatchGatherer", "CACHE_MODES", "ClassBalancedSampler", "GpuResidentFeatures", "InstanceSampler",
           "SAMPLERS", "SquareRootSampler", "StreamedFeatures", "VideoFeatureDataset", "draw_frames",
           "epoch_generator", "frames_nbytes", "label_mask", "label_masks", "load_frames", "make_loader",
           "make_sampler", "random_frame_indices", "set_epoch", "uniform_frame_indices", "uniform_frames"]
