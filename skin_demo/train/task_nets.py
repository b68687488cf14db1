"""What one model package holds: the multi-task network narrowed to one task's logits, as ONNX will run it."""

from __future__ import annotations

import torch
from torch import nn

from skin_demo.taxonomy import LESION_CODES, MALIGNANT_CODES
from skin_demo.train.model import MultiTaskNet


class SingleTaskNet(nn.Module):
    """Backbone plus one head, returning that task's logits."""

    def __init__(self, net: MultiTaskNet, task: str):
        super().__init__()
        self.backbone = net.backbone
        self.head = net.heads[task]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))


class LesionSumMalignancy(nn.Module):
    """Malignancy from the lesion-type head: logits [log P(benign), log P(malignant)], where P(malignant) is the
    sum of P(akiec), P(bcc) and P(mel). softmax of these logits gives back exactly those two sums, so the package
    follows the ordinary [benign, malignant] contract."""

    def __init__(self, net: MultiTaskNet):
        super().__init__()
        self.lesion = SingleTaskNet(net, "lesion_type")
        self.register_buffer("benign_columns", torch.tensor(
            [i for i, c in enumerate(LESION_CODES) if c not in MALIGNANT_CODES]), persistent=False)
        self.register_buffer("malignant_columns", torch.tensor(
            [i for i, c in enumerate(LESION_CODES) if c in MALIGNANT_CODES]), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(self.lesion(image), dim=1)
        benign = torch.logsumexp(log_p.index_select(1, self.benign_columns), dim=1)
        malignant = torch.logsumexp(log_p.index_select(1, self.malignant_columns), dim=1)
        return torch.stack([benign, malignant], dim=1)


class FlipAveraged(nn.Module):
    """Flip test-time augmentation inside the graph: the mean of the image's and its mirror image's logits, so
    server and browser run it without knowing."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (self.inner(image) + self.inner(torch.flip(image, dims=[3]))) / 2
