"""Image transforms: DARTS-style training augmentation, evaluation transforms and :class:`Cutout`.

:func:`train_transform` and :func:`test_transform` pick the recipe from a :class:`~nasbench.data.DatasetInfo`:
pad-4 random crop (+ flip) for small images (pad 2 for the 16×16 ImageNet16-120, as NAS-Bench-201 trains
it), the ImageNet recipe (random-resized crop, colour jitter; resize + centre crop for evaluation) from
:data:`~nasbench.data.LARGE_IMAGE` pixels on, and nothing but Cutout for the synthetic dataset, whose
images are already normalised tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from nasbench.data.datasets import LARGE_IMAGE, DatasetInfo, Transform


class Cutout:
    """Zero one ``length×length`` square of a CHW tensor, centred uniformly over the image, clipped at borders.

    As in the DARTS evaluation code, but the centre comes from torch's RNG so runs follow ``torch.manual_seed``
    (and the square has side ``length`` for odd lengths too).
    """

    def __init__(self, length: int):
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.length <= 0:
            return img
        h, w = img.shape[-2], img.shape[-1]
        y = int(torch.randint(h, (1,)))
        x = int(torch.randint(w, (1,)))
        y1, x1 = y - self.length // 2, x - self.length // 2
        y2, x2 = y1 + self.length, x1 + self.length
        y1, y2 = max(0, y1), min(h, y2)
        x1, x2 = max(0, x1), min(w, x2)
        img = img.clone()
        img[..., y1:y2, x1:x2] = 0
        return img

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


CROP_PADDING = {"imagenet16-120": 2}
"""Padding of the training random crop where it is not 4 (NAS-Bench-201: ImageNet16 crops 16 with padding 2)."""


def _large(info: DatasetInfo) -> bool:
    return info.name == "imagenet" or info.image_size >= LARGE_IMAGE


def train_transform(info: DatasetInfo, cutout: int = 0, augment: bool = True, color_jitter: bool = True) -> Transform:
    """Training augmentation (DARTS): pad-4 random crop + flip for small images (pad 2 for ImageNet16-120),
    the ImageNet recipe for large (random-resized crop, flip and, unless ``color_jitter`` is false, colour
    jitter: PC-DARTS's ImageNet search has none).

    ``augment=False`` leaves only the test transform (and Cutout, if asked). Synthetic data are already
    normalised tensors: only Cutout applies (None without it).
    """
    if info.name == "synthetic":  # (before importing torchvision: seconds per process)
        return Cutout(cutout) if cutout > 0 else None
    from torchvision import transforms as T

    if not augment:
        base = test_transform(info)
        return T.Compose([base, Cutout(cutout)]) if cutout > 0 else base
    steps: list[Any]
    if _large(info):
        size = 224 if info.name == "imagenet" else info.image_size
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        if color_jitter:
            steps.append(T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2))
    else:
        steps = [T.RandomCrop(info.image_size, padding=CROP_PADDING.get(info.name, 4))]
        if info.name != "mnist":  # flipped digits are other digits (or none)
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def test_transform(info: DatasetInfo) -> Transform:
    """Evaluation transform: ToTensor + Normalize (after Resize + CenterCrop for large images)."""
    if info.name == "synthetic":
        return None
    from torchvision import transforms as T

    steps: list[Any] = []
    if _large(info):
        size = 224 if info.name == "imagenet" else info.image_size
        steps = [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
    steps += [T.ToTensor(), T.Normalize(info.mean, info.std)]
    return T.Compose(steps)


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported by name


__all__ = ["Cutout", "train_transform", "test_transform"]
