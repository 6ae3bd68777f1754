"""The SG light fitted to an HDR map relights a diffuse sphere like Mitsuba 3 does under that map.

This tests the equirectangular convention and ``envmap_to_world`` against the renderer that makes
the data (not against ourselves): a white Lambertian sphere under a sky with a sun, rendered by
Mitsuba and by the closed-form SG rendering equation, pixel by pixel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physinv.core import brdf, sg
from physinv.core.camera import intrinsics_from_fov, look_at, image_rays
from physinv.core.sdf import ray_sphere
from physinv.io.hdr import write_hdr
from physinv.synth import variant as variant_mod
from physinv.synth.sky import SkyParams, envmap_to_world, sky_map

RES = 32
ALBEDO = 0.8


def _mitsuba_sphere(mi, envmap_path, c2w, intrinsics):
    fx = float(intrinsics[0])
    to_world = c2w.numpy() @ np.diag([-1.0, 1.0, -1.0, 1.0])  # OpenGL camera -> Mitsuba's
    scene = mi.load_dict({
        "type": "scene",
        "integrator": {"type": "path", "max_depth": 3, "hide_emitters": True},
        "sphere": {"type": "sphere", "radius": 1.0, "bsdf": {"type": "diffuse", "reflectance": {"type": "rgb", "value": [ALBEDO] * 3}}},
        "light": {"type": "envmap", "filename": str(envmap_path), "to_world": mi.ScalarTransform4f(envmap_to_world().tolist())},
        "sensor": {
            "type": "perspective", "fov": math.degrees(2 * math.atan(0.5 * RES / fx)), "fov_axis": "x",
            "to_world": mi.ScalarTransform4f(to_world.tolist()),
            "film": {"type": "hdrfilm", "width": RES, "height": RES, "pixel_format": "rgba", "rfilter": {"type": "box"}},
            "sampler": {"type": "stratified", "sample_count": 64, "jitter": False},
        },
    })
    return np.array(mi.render(scene, spp=64), dtype=np.float32)


@pytest.fixture(scope="module")
def mitsuba_reference(tmp_path_factory):
    """(sky map, Mitsuba's render (H, W, 4), c2w, intrinsics) of a white diffuse unit sphere."""
    tmp = tmp_path_factory.mktemp("convention")
    mi = variant_mod.use_variant("scalar_rgb")
    params = SkyParams(sun_elevation_deg=25.0, sun_azimuth_deg=70.0, sun_size_deg=8.0, sun_intensity=20.0, height=32)
    sky = sky_map(params)
    write_hdr(tmp / "sky.exr", sky)
    c2w = look_at(torch.tensor([3.2, 1.0, 1.2], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    intrinsics = intrinsics_from_fov(math.radians(45.0), RES, RES)
    return sky, _mitsuba_sphere(mi, tmp / "sky.exr", c2w, intrinsics), c2w, intrinsics


def _relative_error(sky_map_array, reference, c2w, intrinsics, lobes=96, steps=250):
    """Fit SGs to the map, shade the analytic sphere in closed form; relative L2 to Mitsuba and the
    brightness correlation on fully covered pixels."""
    light, rel = sg.fit_envmap(torch.as_tensor(sky_map_array), lobes=lobes, steps=steps, to_world=torch.as_tensor(envmap_to_world(), dtype=torch.float32))
    o, d = image_rays(c2w.float(), intrinsics.float(), RES, RES)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    near, _, crosses = ray_sphere(o, d, 1.0)
    normal = torch.nn.functional.normalize(o + near[:, None] * d, dim=-1)
    ours = brdf.render_sg(normal, -d, light.axis, light.sharpness, light.amplitude, torch.full((len(o), 3), ALBEDO))["rgb"]
    inner = torch.as_tensor(reference[..., 3].reshape(-1) > 0.999) & crosses  # fully covered pixels
    ref = torch.as_tensor(reference[..., :3].reshape(-1, 3))[inner]
    mine = ours[inner]
    assert inner.sum() > 200
    corr = torch.corrcoef(torch.stack([mine.sum(-1), ref.sum(-1)]))[0, 1]
    return float((mine - ref).norm() / ref.norm()), float(corr), rel


def test_sg_fit_relights_a_diffuse_sphere_like_mitsuba(mitsuba_reference):
    sky, reference, c2w, intrinsics = mitsuba_reference
    err, corr, fit_rel = _relative_error(sky, reference, c2w, intrinsics)
    assert fit_rel < 0.25
    assert err < 0.08, err
    assert corr > 0.97  # the lit side is where Mitsuba has it


def test_a_mirrored_convention_would_be_caught(mitsuba_reference):
    """The same check with the map flipped left-right fails: the test can see a convention slip."""
    sky, reference, c2w, intrinsics = mitsuba_reference
    err, corr, _ = _relative_error(np.ascontiguousarray(sky[:, ::-1]), reference, c2w, intrinsics)
    assert err > 0.15 and corr < 0.9, (err, corr)
