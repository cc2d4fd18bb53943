"""The torch side of features: datasets over a split and a feature store, samplers, loaders."""

from meid_bench.data.dataset import (CACHE_MODES, GpuResidentFeatures, VideoFeatureDataset, make_loader, make_sampler,
                                     random_frame_indices, set_epoch, uniform_frame_indices)
from meid_bench.data.samplers import (SAMPLERS, ClassBalancedSampler, InstanceSampler, SquareRootSampler, label_mask)

__all__ = ["CACHE_MODES", "ClassBalancedSampler", "GpuResidentFeatures", "InstanceSampler", "SAMPLERS",
           "SquareRootSampler", "VideoFeatureDataset", "label_mask", "make_loader", "make_sampler",
           "random_frame_indices", "set_epoch", "uniform_frame_indices"]
