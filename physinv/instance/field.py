"""The instance field (Instance-NeRF §3.1.1, Fig. 3): G(x) = i, L = K + 1 logits (0 = background).

Its own multi-resolution hash grid H_i (``physinv.core.encoding.HashGridEncoding``, not the
NeRF's) encodes the position; a small MLP maps that encoding concatenated with the frozen NeRF's
geometry feature at the same sample (the hidden features after its density network, Θσ) to the
logits. Logits are composited with the NeRF's own volume-rendering weights (eq. 5).

Deviation: a ray that leaves the scene box with transmittance T_out = 1 - opacity adds
``T_out * b`` with b = (``background_logit``, 0, ..., 0), as a NeRF adds its background colour, so
empty space renders as background without the field having to learn it (tested in
test_empty_rays_are_background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from physinv.core.encoding import HashGridEncoding
from physinv.core.field import MLP
from physinv.core.volume import RaySamples, composite_samples


@dataclass
class InstanceFieldConfig:
    levels: int = 8
    features_per_level: int = 2
    log2_table_size: int = 15
    base_resolution: int = 8
    finest_resolution: int = 128
    width: int = 64
    depth: int = 2
    background_logit: float = 10.0


class InstanceField(nn.Module):
    """Instance logits (M, L) at points (M, 3) in the scene box (2, 3), given geometry features (M, F)."""

    def __init__(self, num_labels: int, geo_dim: int, aabb: Tensor, cfg: InstanceFieldConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or InstanceFieldConfig()
        self.num_labels, self.geo_dim = num_labels, geo_dim
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.encoding = HashGridEncoding(cfg.levels, cfg.features_per_level, cfg.log2_table_size, cfg.base_resolution, cfg.finest_resolution)
        self.mlp = MLP(self.encoding.out_dim + geo_dim, num_labels, width=cfg.width, depth=cfg.depth)

    def forward(self, positions: Tensor, geo_features: Tensor | None = None) -> Tensor:
        x = ((positions - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)
        h = self.encoding(x)
        if self.geo_dim:
            h = torch.cat([h, geo_features.detach().to(h.dtype)], -1)  # the NeRF stays frozen
        return self.mlp(h)

    def background(self) -> Tensor:
        """(L,) logits added with the transmittance left at the end of each ray."""
        b = torch.zeros(self.num_labels, device=self.aabb.device)
        b[0] = self.cfg.background_logit
        return b

    def describe(self) -> dict:
        return {"num_labels": self.num_labels, "geo_dim": self.geo_dim, **asdict(self.cfg)}


def composite_logits(logits: Tensor, weights: Tensor, samples: RaySamples, background: Tensor) -> Tensor:
    """Eq. (5) in packed form, with the frozen NeRF's weights: Σ_k w_k i_k per ray, plus
    (1 - Σ_k w_k) * background. logits (M, L), weights (M,) -> (n_rays, L)."""
    out = composite_samples(weights, samples, {"logits": logits, "opacity": torch.ones_like(weights)})
    return out["logits"] + (1.0 - out["opacity"]).clamp_min(0)[:, None] * background
