"""Mitsuba ground truth against analytic geometry: a sphere's depth, normals and coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physinv.core.camera import image_rays
from physinv.io.dataset import load_views
from physinv.io.images import linear_to_srgb, read_labels
from physinv.io.mesh import load_mesh
from physinv.io.transforms import read_transforms
from physinv.synth.scene import synthesize
from physinv.synth.spec import MaterialSpec, ObjectSpec, SceneSpec

CENTRE, RADIUS = np.array([0.1, -0.05, 0.2]), 0.5


def _sphere_scene(out, variant):
    spec = SceneSpec(
        objects=[ObjectSpec("sphere", "ball", position=CENTRE.tolist(), scale=[RADIUS] * 3, material=MaterialSpec("diffuse", albedo=[0.6, 0.3, 0.2]))],
        aabb=[[-1.0] * 3, [1.0] * 3],
    )
    return synthesize(out, spec=spec, views=3, test_views=1, res=32, spp=4, seed=1, variant=variant, progress=False)


@pytest.mark.parametrize("variant", ["scalar_rgb", None])  # None: llvm_ad_rgb where a usable libLLVM exists
def test_sphere_depth_normals_coverage_are_analytic(tmp_path, variant):
    data = _sphere_scene(tmp_path / "s", variant)
    transforms = read_transforms(data / "transforms_train.json")
    for frame in transforms.frames:
        o, d = image_rays(torch.as_tensor(frame.c2w), torch.as_tensor(frame.intrinsics), frame.width, frame.height)
        o, d = o.numpy(), d.numpy()
        oc = o - CENTRE
        b = (oc * d).sum(-1)
        disc = b**2 - ((oc * oc).sum(-1) - RADIUS**2)
        inside = disc > 1e-3  # away from the silhouette, where float32 rounding could flip a pixel
        outside = disc < -1e-3
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        depth = np.load(frame.extras["depth_path"])
        normal = np.load(frame.extras["normal_path"])
        ids = read_labels(frame.extras["instance_path"])
        assert inside.sum() > 50 and outside.sum() > 50
        # depth is the distance along the unit pixel-centre ray
        np.testing.assert_allclose(depth[inside], t[inside], rtol=2e-5, atol=1e-5)
        assert (depth[outside] == 0).all()
        # normals: (x - c) / r at the hit point
        analytic = (o + t[..., None] * d - CENTRE) / RADIUS
        cos = (normal[inside] * analytic[inside]).sum(-1)
        assert cos.min() > 1 - 1e-5
        # instance id 1 exactly where the ray hits the sphere
        assert (ids[inside] == 1).all() and (ids[outside] == 0).all()
        assert ((ids == 1) == (depth > 0)).all()
    views = load_views(data, "train", maps=("albedo",))
    hit = views.alpha == 1
    srgb = torch.as_tensor(linear_to_srgb(np.array([0.6, 0.3, 0.2])), dtype=torch.float32)
    assert (views.maps["albedo"][hit] - srgb).abs().max() <= 1 / 255
    # RGB coverage (anti-aliased alpha) agrees with the analytic silhouette away from the edge
    for k, frame in enumerate(transforms.frames):
        o, d = image_rays(torch.as_tensor(frame.c2w), torch.as_tensor(frame.intrinsics), frame.width, frame.height)
        oc = o.numpy() - CENTRE
        b = (oc * d.numpy()).sum(-1)
        disc = b**2 - ((oc * oc).sum(-1) - RADIUS**2)
        alpha = views.alpha[k].numpy()
        assert (alpha[disc > 0.05] == 1).all() and (alpha[disc < -0.05] == 0).all()


def test_tiny_scene_maps_agree_with_the_ground_truth_meshes(tiny_scene):
    """Back-projected depth lands on the written meshes, and on the mesh of the pixel's instance id."""
    views = load_views(tiny_scene, "train", maps=("depth", "instance", "normal"))
    meta = read_transforms(views.source).extras
    meshes = {o["id"]: load_mesh(o["mesh"]) for o in meta["objects"]}
    assert sorted(meshes) == [1, 2, 3]
    from scipy.spatial import cKDTree

    # dense surface samples (about 3 mm apart) stand in for point-to-mesh distances
    trees = {i: cKDTree(m.sample(150_000, seed=i)) for i, m in meshes.items()}
    seen = set()
    for k in range(0, len(views), 2):
        o, d = image_rays(views.c2w[k].double(), views.intrinsics[k].double(), views.width, views.height)
        depth = views.maps["depth"][k].double()
        ids = views.maps["instance"][k]
        hit = depth > 0
        assert ((ids > 0) == hit).all()
        points = (o + depth[..., None] * d)[hit].numpy()
        dist = np.stack([trees[i].query(points)[0] for i in sorted(meshes)], -1)
        assert dist.min(-1).max() < 1e-2  # on some mesh (sample spacing + 2 mm icosphere sag)
        assert (dist.argmin(-1) + 1 == ids[hit].numpy()).mean() > 0.98  # and on its own one
        normals = views.maps["normal"][k][hit]
        assert torch.allclose(normals.norm(dim=-1), torch.ones(()), atol=1e-4)
        assert ((normals * d[hit].float()).sum(-1) < 1e-4).all()  # they face the camera
        seen |= set(ids[hit].unique().tolist())
    assert seen == {1, 2, 3}
    lo, hi = meta["aabb"]
    for mesh in meshes.values():
        assert (mesh.bounds[0] >= np.array(lo)).all() and (mesh.bounds[1] <= np.array(hi)).all()


def test_an_off_centre_principal_point_renders_where_the_pinhole_model_says():
    """Mitsuba's sensor against core.camera's rays for a principal point far from the image centre:
    the sphere's hit mask is the analytic one (a sign error in the offset moves it to the other side)."""
    import mitsuba  # noqa: F401  (the variant is chosen by synth)

    from physinv.core.camera import look_at
    from physinv.synth.scene import mitsuba_sensor, render_film
    from physinv.synth.variant import select_variant, use_variant

    mi = use_variant(select_variant())
    W, H = 40, 32
    intrinsics = np.array([30.0, 30.0, 12.5, 22.0])  # (cx, cy) pixels: 7.5 left of and 6 below the centre
    c2w = look_at(torch.tensor([0.3, -3.0, 0.6], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)).numpy()
    scene = mi.load_dict({"type": "scene", "integrator": {"type": "aov", "aovs": "dd:depth"}, "ball": {"type": "sphere", "center": CENTRE.tolist(), "radius": RADIUS}})
    hit = render_film(mi, scene, mitsuba_sensor(mi, c2w, intrinsics, W, H, 1, exact=True), 0, 1)[..., 4] > 0
    o, d = image_rays(torch.as_tensor(c2w), torch.as_tensor(intrinsics), W, H)
    oc = o.numpy() - CENTRE
    b = (oc * d.numpy()).sum(-1)
    disc = b**2 - ((oc * oc).sum(-1) - RADIUS**2)
    inside, outside = disc > 1e-3, disc < -1e-3
    assert inside.sum() > 50 and outside.sum() > 50
    assert hit[inside].all() and not hit[outside].any()
