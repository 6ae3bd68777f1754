"""MLP building blocks for neural fields: configurable width/depth, input skips, output activations.

``trunc_exp`` is instant-ngp's density activation: ``exp`` forward, with the backward pass's
exponent clamped so a large pre-activation cannot blow up the gradient.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """``exp(x)`` whose gradient uses ``exp(min(x, 15))`` (instant-ngp's density activation)."""
    return _TruncExp.apply(x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda x: x,
    "relu": F.relu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "trunc_exp": trunc_exp,
    "exp": torch.exp,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """Activation by name: none, relu, softplus, sigmoid, trunc_exp, exp."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Fully connected network ``in_dim -> [width] * depth -> out_dim``.

    skips: hidden-layer indices (0-based) whose *input* is the previous activation concatenated with
    the network input (NeRF feeds the input again to its fifth layer: ``skips=(4,)``).
    hidden_activation applies after every hidden layer; output_activation (by name) after the last.
    ``depth = 0`` is a single linear map. ``bias=False`` gives instant-ngp's bias-free layers.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int = 64,
        depth: int = 2,
        skips: Sequence[int] = (),
        hidden_activation: str = "relu",
        output_activation: str = "none",
        bias: bool = True,
    ):
        super().__init__()
        self.in_dim, self.out_dim, self.skips = in_dim, out_dim, tuple(skips)
        layers = []
        prev = in_dim
        for i in range(depth):
            layers.append(nn.Linear(prev + (in_dim if i in self.skips and i > 0 else 0), width, bias=bias))
            prev = width
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(prev, out_dim, bias=bias) if out_dim > 0 else None
        self.hidden_act = activation(hidden_activation)
        self.output_act = activation(output_activation)

    def forward(self, x: Tensor, return_hidden: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (N, in_dim) -> (N, out_dim); with ``return_hidden`` also the last hidden activation (N, width)."""
        h = x
        for i, layer in enumerate(self.hidden):
            if i in self.skips and i > 0:
                h = torch.cat([h, x], -1)
            h = self.hidden_act(layer(h))
        y = self.output_act(self.out(h)) if self.out is not None else h
        return (y, h) if return_hidden else y


# ----------------------------------------------------------------------------------------------
# signed-distance networks (IDR / PhySG)


class SoftplusBeta(nn.Module):
    """Softplus(beta) = log(1 + exp(beta x)) / beta: a smooth ReLU (IDR and PhySG use beta = 100) whose
    second derivative exists, so the eikonal loss on grad f can be trained."""

    def __init__(self, beta: float = 100.0):
        super().__init__()
        self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, beta=self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}"


@torch.no_grad()
def geometric_init_(mlp: MLP, radius: float = 1.0, raw_dims: int = 3) -> MLP:
    """Geometric initialisation (Atzmon & Lipman's SAL, as IDR uses it) so that ``mlp(x) ~ |x| - radius``:
    a signed distance to a sphere, negative inside. Hidden weights ~ N(0, 2 / width); the encoded
    (non-raw) inputs get zero weights in the first layer and in every skip layer, so at init the
    network sees only the first ``raw_dims`` input columns (the raw position); the output layer has
    weights ~ N(sqrt(pi / width), 1e-4) and bias -radius. ``mlp.out_dim`` must be >= 1; extra
    outputs (features) start like the first. Modifies and returns ``mlp``.
    """
    for i, layer in enumerate(mlp.hidden):
        out_dim = layer.weight.shape[0]
        nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(out_dim))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        if i == 0:
            layer.weight[:, raw_dims:] = 0.0
        elif i in mlp.skips and mlp.in_dim > raw_dims:
            layer.weight[:, -(mlp.in_dim - raw_dims):] = 0.0
    last = mlp.out
    width = last.weight.shape[1]
    nn.init.normal_(last.weight, math.sqrt(math.pi) / math.sqrt(width), 1e-4)
    if last.bias is not None:
        nn.init.constant_(last.bias, -radius)
    return mlp


class SDFMLP(MLP):
    """IDR's SDF network: an :class:`MLP` with Softplus(beta) hidden activations whose skip layers see
    ``cat(h, x) / sqrt(2)`` (keeping the activations' variance, which the geometric init assumes),
    initialised by :func:`geometric_init_` to the SDF of a sphere of ``radius``.
    Output 0 is the signed distance; further outputs are features (PhySG feeds none on)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1,
        width: int = 256,
        depth: int = 8,
        skips: Sequence[int] = (4,),
        radius: float = 1.0,
        beta: float = 100.0,
        raw_dims: int = 3,
    ):
        super().__init__(in_dim, out_dim, width=width, depth=depth, skips=skips, hidden_activation="none")
        self.hidden_act = SoftplusBeta(beta)
        geometric_init_(self, radius=radius, raw_dims=raw_dims)

    def forward(self, x: Tensor, return_hidden: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (N, in_dim) -> (N, out_dim) (and the last hidden activation (N, width))."""
        h = x
        for i, layer in enumerate(self.hidden):
            if i in self.skips and i > 0:
                h = torch.cat([h, x], -1) / math.sqrt(2.0)
            h = self.hidden_act(layer(h))
        y = self.out(h)
        return (y, h) if return_hidden else y
