"""How MEID fuses its two experts' logits at inference: fixed averages, or per-class weights learnt on training data.

Fixed (``fuse_logits``): ``mean_prob`` logit((1 - w) sigmoid(l1) + w sigmoid(l2)), ``mean_logit`` (1 - w) l1 + w l2,
``expert1`` / ``expert2`` one expert alone; w is expert 2's share.

Learnt (``LearnedFusion``), per class c, on the training stream's instance batches with the experts' logits
detached (the fusion learns how much to trust each expert per class and never changes the experts):

- ``gate_prob``: logit((1 - g_c) sigmoid(l1) + g_c sigmoid(l2)), g_c = sigmoid(a_c): a per-class gate between the
  experts' probabilities, starting at the fixed weight w;
- ``stack_logit``: a_c l1 + b_c l2 + c_c: per-class logistic stacking (weights may rescale each expert's logits, whose
  scales differ: expert 2 learns on class-balanced batches), starting at (1 - w) l1 + w l2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FUSION_FORMS = ("mean_logit", "mean_prob", "expert1", "expert2", "gate_prob", "stack_logit")
LEARNED_FUSIONS = ("gate_prob", "stack_logit")


def probability_mixture(expert1: Tensor, expert2: Tensor, log_w1: Tensor | float, log_w2: Tensor | float) -> Tensor:
    """logit(w1 sigmoid(a) + w2 sigmoid(b)) from log weights, in log space (float32 sigmoid saturates near 17)."""
    a, b = expert1.float(), expert2.float()
    log_p = torch.logaddexp(log_w1 + F.logsigmoid(a), log_w2 + F.logsigmoid(b))
    log_q = torch.logaddexp(log_w1 + F.logsigmoid(-a), log_w2 + F.logsigmoid(-b))
    return log_p - log_q


def fuse_logits(expert1: Tensor, expert2: Tensor, mode: str, weight: float) -> Tensor:
    """Fuse the experts' logits with a fixed rule; ``weight`` is expert 2's share. Returns logits."""
    if mode == "expert1":
        return expert1
    if mode == "expert2":
        return expert2
    if mode == "mean_logit":
        return (1.0 - weight) * expert1 + weight * expert2
    if mode == "mean_prob":
        log_w1 = math.log(1.0 - weight) if weight < 1.0 else -math.inf
        log_w2 = math.log(weight) if weight > 0.0 else -math.inf
        return probability_mixture(expert1, expert2, log_w1, log_w2)
    raise ValueError(f"unknown fusion {mode!r}")


class LearnedFusion(nn.Module):
    """Per-class fusion weights (``gate_prob`` or ``stack_logit``), starting at expert 2's share ``weight``."""

    def __init__(self, form: str, num_classes: int, weight: float) -> None:
        super().__init__()
        if form not in LEARNED_FUSIONS:
            raise ValueError(f"unknown learned fusion {form!r}")
        self.form = form
        if form == "gate_prob":
            self.gate = nn.Parameter(torch.full((num_classes,), math.log(weight / (1.0 - weight))))
        else:
            self.weights = nn.Parameter(torch.tensor([[1.0 - weight], [weight]]).repeat(1, num_classes))
            self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, expert1: Tensor, expert2: Tensor) -> Tensor:
        if self.form == "gate_prob":
            return probability_mixture(expert1, expert2, F.logsigmoid(-self.gate), F.logsigmoid(self.gate))
        return self.weights[0] * expert1.float() + self.weights[1] * expert2.float() + self.bias

    def expert2_share(self) -> Tensor:
        """[C] expert 2's weight per class: the gate (gate_prob), or b / (|a| + |b|) (stack_logit)."""
        if self.form == "gate_prob":
            return torch.sigmoid(self.gate).detach()
        a, b = self.weights.detach().abs()
        return b / (a + b).clamp_min(1e-12)
