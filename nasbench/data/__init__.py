"""Data: datasets, transforms, the DARTS search split and resumable loaders.

* :mod:`nasbench.data.datasets`: the registered datasets (importing this package registers them all with
  :mod:`nasbench.registry`), :func:`load_dataset` and :func:`dataset_info`;
* :mod:`nasbench.data.transforms`: training augmentation, evaluation transforms, :class:`Cutout`;
* :mod:`nasbench.data.sampling`: subsets, the search split, :class:`EpochSampler` and :func:`make_loader`.

Callers use the names re-exported here (``from nasbench import data as data_mod; data_mod.load_dataset(...)``).
"""

from __future__ import annotations

from nasbench.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MEAN,
    FASHION_STD,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IMAGENET16_MEAN,
    IMAGENET16_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LARGE_IMAGE,
    MNIST_MEAN,
    MNIST_STD,
    ArrayImageDataset,
    Cifar10,
    Cifar100,
    DatasetInfo,
    DatasetSpec,
    FashionMnist,
    ImageFolderSpec,
    ImageNet,
    ImageNet16_120,
    Mnist,
    Synthetic,
    TensorImageDataset,
    Transform,
    dataset_info,
    default_data_dir,
    load_dataset,
    read_idx,
)
from nasbench.data.sampling import (DrawBatchSampler, EpochSampler, batches_per_epoch, make_loader, random_search_split,
                                    search_split, subset_indices)
from nasbench.data.transforms import Cutout, test_transform, train_transform

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "FASHION_MEAN", "FASHION_STD",
    "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "IMAGENET16_MEAN", "IMAGENET16_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "LARGE_IMAGE", "MNIST_MEAN", "MNIST_STD", "ArrayImageDataset", "Cifar10", "Cifar100", "DatasetInfo",
    "DatasetSpec", "FashionMnist", "ImageFolderSpec", "ImageNet", "ImageNet16_120", "Mnist", "Synthetic",
    "TensorImageDataset", "Transform", "dataset_info", "default_data_dir", "load_dataset", "read_idx",
    "DrawBatchSampler", "EpochSampler", "batches_per_epoch", "make_loader", "random_search_split", "search_split",
    "subset_indices", "Cutout",
    "test_transform", "train_transform",
]
