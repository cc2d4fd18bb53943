"""The building blocks shared by MEID and the baselines: frame embedding, attention pooling, necks, classifier."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device``: inside, operations run in the dtypes of their inputs (float32 where the caller
    casts to it), whatever precision the training step runs in (the loop's bfloat16 autocast on CUDA)."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class Dropout(nn.Module):
    """Inverted dropout, same distribution as ``nn.Dropout``. On the CPU the mask is drawn as ``rand >= p``:
    ``bernoulli_`` there took 4x as long and was a third of a MEID training step (perf/bench_train_step.py)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        keep = torch.rand(x.shape, dtype=torch.float32, device=x.device) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FrameEmbedding(nn.Module):
    """Per-frame Linear(D, H) -> ReLU -> Dropout: the reference classifier's first half, shared by every model.

    [B, T, D] -> [B, T, H]. ``activations`` is the part before dropout, so that a caller can embed frames once and
    apply dropout to a subset of them (``self.dropout``): the same values as embedding that subset.
    """

    def __init__(self, input_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, hidden)
        self.activation = nn.ReLU()
        self.dropout = Dropout(dropout)

    def activations(self, features: Tensor) -> Tensor:
        return self.activation(self.linear(features))

    def rows_with_gradient(self, features: Tensor, activations: Tensor) -> Tensor:
        """``activations`` (this embedding's ReLU(Linear(features)), computed without gradient) made differentiable
        with respect to the linear layer, as if computed from ``features`` here: the values are reused and the
        backward pass computes the weight and bias gradients of these rows only (no second forward product)."""
        return _ReusedLinearReLU.apply(activations, features, self.linear.weight, self.linear.bias)

    def forward(self, features: Tensor, dropout: bool = True) -> Tensor:
        hidden = self.activations(features)
        return self.dropout(hidden) if dropout else hidden


class _ReusedLinearReLU(torch.autograd.Function):
    """y = ReLU(x W^T + b) with y given: backward gives dW = (g * [y > 0])^T x and db = sum(g * [y > 0])."""

    @staticmethod
    def forward(ctx, values: Tensor, features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(values, features)
        ctx.weight_dtype = weight.dtype
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor, Tensor]:  # type: ignore[override]
        values, features = ctx.saved_tensors
        passed = (grad * (values > 0)).reshape(-1, grad.shape[-1]).to(ctx.weight_dtype)
        weight_grad = passed.T @ features.reshape(-1, features.shape[-1]).to(ctx.weight_dtype)
        return None, None, weight_grad, passed.sum(dim=0)


class AttentionPooling(nn.Module):
    """Frame attention (Ilse et al. 2018): score_t = w . tanh(V e_t); weights = softmax over frames.

    ``scores`` [B, T, H] -> [B, T]; ``weights`` the softmax of those; ``forward`` returns the weighted sum [B, H]
    and the weights [B, T].
    """

    def __init__(self, hidden: int, attention_hidden: int) -> None:
        super().__init__()
        self.project = nn.Linear(hidden, attention_hidden)
        # No bias: softmax over frames ignores a constant, so a bias would never receive a gradient.
        self.score = nn.Linear(attention_hidden, 1, bias=False)

    def scores(self, frames: Tensor) -> Tensor:
        # In float32 even under bfloat16 autocast: bf16 scores of 60 frames tie (about 3 ties a video against
        # 0.6 in float32), and complementary frame selection ranks frames by them.
        with full_precision(frames.device):
            return self.score(self.project(frames.to(self.project.weight.dtype)).tanh()).squeeze(-1)

    def weights(self, frames: Tensor) -> Tensor:
        # Softmax in float32: under mixed precision fp16 weights of 150 frames lose the ordering CFS relies on.
        return self.scores(frames).float().softmax(dim=-1)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.weights(frames)
        return pool(frames, weights), weights


def pool(frames: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum over frames: [B, T, H] with [B, T] weights -> [B, H] (one batched matmul, no [B, T, H] product)."""
    return torch.bmm(weights.to(frames.dtype).unsqueeze(1), frames).squeeze(1)


class Neck(nn.Module):
    """A residual bottleneck MLP on frame embeddings: e + up(ReLU(down(e))), down: H -> r, up: r -> H.

    Residual so a neck starts close to the shared embedding and only learns what its class group needs; a
    bottleneck (r = H/4 by default) keeps two necks cheap next to the embedding (the 1.5x step-time goal).
    ``up`` is linear and attention weights sum to 1, so pooling commutes with it: MEID pools the bottleneck
    activations and applies ``up`` once per video, never building the per-frame [B, T, H] neck output.
    """

    def __init__(self, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.activation = nn.ReLU()
        self.up = nn.Linear(bottleneck, hidden)

    def forward(self, frames: Tensor) -> Tensor:
        return frames + self.up(self.activation(self.down(frames)))


class Classifier(nn.Module):
    """Linear(H, C) from a pooled video embedding (or per frame) to class logits."""

    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, embedding: Tensor) -> Tensor:
        return self.linear(embedding)


def default_attention_hidden(hidden: int, attention_hidden: int | None) -> int:
    """The attention MLP's width: given, or a quarter of the embedding (at least 1)."""
    return attention_hidden if attention_hidden is not None else max(1, hidden // 4)
