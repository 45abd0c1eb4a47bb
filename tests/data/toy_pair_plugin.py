"""A toy objective that needs two encoders at once ('left' and 'right'), for the core tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from toy_plugin import ContrastParams

from sslhub import Objective, ObjectiveOutput, hookimpl


class ToyPairContrastive(Objective):
    """InfoNCE between a 'left' encoder on one view and a 'right' encoder on the other."""

    num_views = 2

    def __init__(self, params: ContrastParams, context):
        super().__init__()
        self.params = params
        self.left_head = nn.Linear(context.encoder["left"].feature_dim, 8)
        self.right_head = nn.Linear(context.encoder["right"].feature_dim, 8)

    def forward(self, views, encoders):
        a = F.normalize(self.left_head(encoders["left"](views[0]).pooled), dim=1)
        b = F.normalize(self.right_head(encoders["right"](views[1]).pooled), dim=1)
        logits = a @ b.T / self.params.temperature
        targets = torch.arange(a.shape[0], device=a.device)
        return ObjectiveOutput(F.cross_entropy(logits, targets))


@hookimpl
def sslhub_register_objectives(registry):
    registry.register("toy_pair_contrastive", ToyPairContrastive, params=ContrastParams, encoders=["left", "right"])
