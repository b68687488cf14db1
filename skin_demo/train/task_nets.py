"""What one model package holds: the multi-task network narrowed to one task's logits, as ONNX will run it."""

from __future__ import annotations

import torch
from torch import nn

from skin_demo.train.model import MultiTaskNet


class SingleTaskNet(nn.Module):
    """Backbone plus one head, returning that task's logits: the last feature map, pooled, then the linear head."""

    def __init__(self, net: MultiTaskNet, task: str):
        super().__init__()
        self.backbone = net.backbone
        self.head = net.heads[task]

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(image)

    def classify(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_head(feature_map))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classify(self.feature_map(image))


class FlipAveraged(nn.Module):
    """Flip test-time augmentation inside the graph, so server and browser run it without knowing: the image's
    feature map averaged with its mirror image's (mirrored back), then pooled and classified once.

    Pooling and the head are linear, so the logits are the mean of the two images' logits; averaging before them
    keeps one pooled classifier in the graph, which the class-activation map is computed from
    (`attention_export`), and that map then lines up with the photo.
    """

    def __init__(self, inner: SingleTaskNet):
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mirrored = torch.flip(self.inner.feature_map(torch.flip(image, dims=[3])), dims=[3])
        return self.inner.classify((self.inner.feature_map(image) + mirrored) / 2)


class LogitAdjusted(nn.Module):
    """Post-hoc logit adjustment (Menon et al. 2021) inside the graph: `inner`'s logits minus tau x log(the class
    prior the network was trained under), so rare classes are not lost to the frequent ones."""

    def __init__(self, inner: nn.Module, offset: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("offset", offset.float())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image) - self.offset
