"""What one model package holds: the multi-task network narrowed to one task's logits, as ONNX will run it."""

from __future__ import annotations

import torch
from torch import nn

from skin_demo.train.model import MultiTaskNet


class SingleTaskNet(nn.Module):
    """Backbone plus one head, returning that task's logits."""

    def __init__(self, net: MultiTaskNet, task: str):
        super().__init__()
        self.backbone = net.backbone
        self.head = net.heads[task]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))


class FlipAveraged(nn.Module):
    """Flip test-time augmentation inside the graph: the mean of the image's and its mirror image's logits, so
    server and browser run it without knowing."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (self.inner(image) + self.inner(torch.flip(image, dims=[3]))) / 2


class LogitAdjusted(nn.Module):
    """Post-hoc logit adjustment (Menon et al. 2021) inside the graph: `inner`'s logits minus tau x log(the class
    prior the network was trained under), so rare classes are not lost to the frequent ones."""

    def __init__(self, inner: nn.Module, offset: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("offset", offset.float())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image) - self.offset
