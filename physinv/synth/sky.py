"""Procedural sky + sun environment maps.

Maps are equirectangular in Mitsuba 3's convention (see :mod:`physinv.core.sg`) in the map's local
frame, rotated into physinv's world (+z up) by :func:`envmap_to_world`, which ``synth`` writes into
every data set as the top-level ``envmap_to_world``. With it, pixel (row v, column u) of an H x W
map holds the radiance arriving *from* world direction

    theta = pi * (v + 0.5) / H          (polar angle from +z)
    phi   = 2 pi * (u + 0.5) / W
    d     = (-sin(theta) cos(phi), sin(theta) sin(phi), cos(theta))

so row 0 is the zenith, the middle row the horizon, and the centre column looks along +x.
The sun is one spherical-Gaussian lobe (evaluated by :func:`physinv.core.sg.evaluate`, the
project's one SG evaluator), so SG-based relighting methods can represent it exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from physinv.core import sg


@dataclass
class SkyParams:
    """Parameters of the procedural sky (colours are linear RGB radiance, angles in degrees)."""

    sun_elevation_deg: float = 45.0
    sun_azimuth_deg: float = 30.0  # from +x towards +y
    sun_intensity: float = 40.0
    sun_colour: list[float] = field(default_factory=lambda: [1.0, 0.95, 0.85])
    sun_size_deg: float = 4.0  # angular radius where the lobe falls to 1/e
    zenith_colour: list[float] = field(default_factory=lambda: [0.25, 0.4, 0.8])
    horizon_colour: list[float] = field(default_factory=lambda: [0.8, 0.85, 0.9])
    ground_colour: list[float] = field(default_factory=lambda: [0.25, 0.22, 0.2])
    intensity: float = 1.0  # overall scale
    height: int = 64  # map resolution: height x (2 * height)

    def to_dict(self) -> dict:
        return asdict(self)


def equirect_directions(height: int, width: int) -> np.ndarray:
    """(H, W, 3) float64 world unit directions of the pixel centres of a sky map (convention above)."""
    return sg.equirect_directions(height, width, torch.as_tensor(envmap_to_world()), dtype=torch.float64).numpy()


def direction_to_equirect(directions: np.ndarray, height: int, width: int) -> np.ndarray:
    """World unit directions (..., 3) -> continuous pixel positions (..., 2) as (u, v) (pixel centres at +0.5)."""
    d = torch.as_tensor(np.asarray(directions, dtype=np.float64))
    return sg.direction_to_equirect(d, height, width, torch.as_tensor(envmap_to_world())).numpy()


def sun_direction(params: SkyParams) -> np.ndarray:
    """(3,) unit direction towards the sun."""
    el, az = math.radians(params.sun_elevation_deg), math.radians(params.sun_azimuth_deg)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def sky_radiance(directions: np.ndarray, params: SkyParams) -> np.ndarray:
    """Linear RGB radiance (..., 3) arriving from unit ``directions`` (..., 3)."""
    d = np.asarray(directions, dtype=np.float64)
    up = d[..., 2:3]
    zen, hor, gnd = (np.asarray(c, dtype=np.float64) for c in (params.zenith_colour, params.horizon_colour, params.ground_colour))
    # sky: horizon -> zenith with a square-root profile (brighter band near the horizon)
    t = np.sqrt(np.clip(up, 0.0, 1.0))
    sky = hor * (1 - t) + zen * t
    # smooth blend into the ground over ~3 degrees below the horizon, so the map has no hard seam
    g = np.clip(-up / 0.05, 0.0, 1.0)
    radiance = sky * (1 - g) + gnd * g
    sharpness = 1.0 / max(1.0 - math.cos(math.radians(params.sun_size_deg)), 1e-8)
    sun = sg.evaluate(
        torch.as_tensor(d),
        torch.as_tensor(sun_direction(params)),
        torch.tensor([sharpness], dtype=torch.float64),
        params.sun_intensity * torch.as_tensor(params.sun_colour, dtype=torch.float64),
    ).numpy()
    return (params.intensity * (radiance + sun)).astype(np.float32)


def sky_map(params: SkyParams) -> np.ndarray:
    """(H, 2H, 3) float32 equirectangular map of the sky (H = ``params.height``)."""
    h = int(params.height)
    return sky_radiance(equirect_directions(h, 2 * h), params)


def light_variations(k: int, base: SkyParams) -> list[SkyParams]:
    """``k`` distinct skies for varying-illumination training, as a collection shot on different
    days: the sun walks around the azimuth, its elevation alternates between high and low, and the
    weather cycles through the base sky, a clear day (the sun 4x, the sky 0.5x: a hard key light)
    and an overcast one (the sun 0.2x, a brighter, cooler sky: soft light). Varying the sun's
    direction and tint alone lights an object almost alike (the relight capsule's mean colour within
    3 %): no test of separating light from colour."""
    if k <= 1:
        return [base]
    colours = ([1.0, 0.75, 0.5], [1.0, 0.97, 0.92], [0.8, 0.88, 1.0])
    zeniths = ([0.35, 0.35, 0.55], [0.25, 0.4, 0.8], [0.2, 0.35, 0.9])
    weather = ((1.0, 1.0), (4.0, 0.5), (0.2, 1.3))  # (sun, sky) factors: as the base, clear, overcast
    out = [base]
    for i in range(1, k):
        p = SkyParams(**base.to_dict())
        sun, sky = weather[i % 3]
        p.sun_azimuth_deg = (base.sun_azimuth_deg + 360.0 * i / k) % 360.0
        p.sun_elevation_deg = 20.0 + 50.0 * ((i * 0.618034) % 1.0)
        p.sun_colour = list(colours[i % 3])
        p.sun_intensity = base.sun_intensity * sun
        p.zenith_colour = [sky * c for c in zeniths[i % 3]]
        p.horizon_colour = [sky * c for c in base.horizon_colour]
        p.ground_colour = [sky * c for c in base.ground_colour]
        out.append(p)
    return out


def envmap_to_world() -> np.ndarray:
    """(4, 4) rotation from the map's local frame (Mitsuba's convention) to physinv's world (+z up);
    the ``to_world`` of Mitsuba's ``envmap`` emitter and a data set's top-level ``envmap_to_world``.

    Mitsuba looks up local direction v at u = atan2(v.x, -v.z) / 2pi, v = acos(v.y) / pi; mapping
    local (x, y, z) to world (y, z, x) makes that u = atan2(d_y, -d_x) / 2pi and v = acos(d_z) / pi.
    """
    return np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
