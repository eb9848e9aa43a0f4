"""Registered architectures for loading ``state_dict`` checkpoints (``--arch NAME``).

A checkpoint holds only weights, so the network has to be built in code. Each registered architecture
knows how to build an untrained network, its default preprocessing (used when no sidecar is given) and
exposes penultimate-layer embeddings through ``forward_with_embeddings``.

CIFAR ResNets (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section
4.2): a 3x3 convolution with 16 filters, then three stages of ``n`` basic blocks with 16, 32 and 64
filters (the first block of stages 2 and 3 halves the resolution), global average pooling and a linear
layer; depth ``6n + 2``. Shortcuts are "option A": identity, or on a change of shape, every second pixel
with the new channels zero-filled (no parameters). Parameter names follow the widely used checkpoints
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``) so those load directly; this is our own code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from audit.errors import ModelError
from audit.model.sidecar import Preprocessing

__all__ = ["Architecture", "ARCHITECTURES", "get_architecture", "CifarResNet", "CIFAR10_CLASSES"]

#: CIFAR-10 class names in label order 0..9.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

ERROR_UNKNOWN_ARCH = "Unknown architecture '{name}' (--arch). Registered architectures: {known}."

_CIFAR_PREPROCESSING = Preprocessing(
    classes=CIFAR10_CLASSES,
    input_size=(32, 32),
    center_crop=1.0,
    channel_order="RGB",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    output="logits",
)


class _BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the parameter-free option-A shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        # Channels added on each side when the shortcut widens (16 -> 32 adds 8 + 8).
        self.extra_channels = (planes - in_planes) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample:
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra_channels, self.extra_channels))
        else:
            shortcut = x
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6 * blocks_per_stage + 2`` (20, 32, 44, 56, ...).

    ``forward`` returns logits ``(n, num_classes)``; ``forward_with_embeddings`` also returns the
    64-d globally average-pooled features that feed the final linear layer.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [_BasicBlock(in_planes, planes, stride)]
        layers += [_BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward_with_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.features(x)
        return self.linear(embeddings), embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


@dataclass(frozen=True)
class Architecture:
    """A registered network.

    Attributes
    ----------
    name : str
        The ``--arch`` name.
    build : callable
        Returns a fresh, untrained ``nn.Module`` with ``forward_with_embeddings(x) -> (scores, embeddings)``.
    default_preprocessing : Preprocessing
        Used when neither ``--preprocess`` nor a sidecar is given.
    embedding_dim : int
        Length of the embeddings vector.
    description : str
    """

    name: str
    build: Callable[[], nn.Module]
    default_preprocessing: Preprocessing
    embedding_dim: int
    description: str


def _cifar_resnet(depth: int) -> Architecture:
    blocks = (depth - 2) // 6
    return Architecture(
        name=f"cifar_resnet{depth}",
        build=lambda: CifarResNet(blocks),
        default_preprocessing=_CIFAR_PREPROCESSING,
        embedding_dim=64,
        description=f"CIFAR-10 ResNet-{depth} (He et al. 2016, option-A shortcuts), 32x32 RGB input, 10 logits",
    )


#: Every architecture ``--arch`` accepts, by name.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (_cifar_resnet(d) for d in (20, 32, 44, 56))}


def get_architecture(name: str) -> Architecture:
    """The registered architecture called ``name``; ModelError listing the known names otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(ERROR_UNKNOWN_ARCH.format(name=name, known=", ".join(sorted(ARCHITECTURES))),
                         column="--arch") from None
