"""Scene specs, lights, the env-map convention, the variant choice and the ``physinv synth`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from physinv.cli import main
from physinv.errors import PhysinvError
from physinv.io.dataset import load_views
from physinv.io.hdr import read_hdr, write_hdr
from physinv.io.images import write_image
from physinv.io.mesh import save_mesh
from physinv.io.transforms import read_transforms
from physinv.synth import variant as variant_mod
from physinv.synth.scene import synthesize
from physinv.synth.sky import SkyParams, equirect_directions, direction_to_equirect, envmap_to_world, sky_map, sky_radiance
from physinv.synth.spec import load_spec

TINY = dict(views=2, test_views=1, res=16, spp=2, progress=False)


def _cli_ok(argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


SPEC = """
aabb = [[-1, -1, -1], [1, 1, 1]]
[camera]
radius = 3.0
[[objects]]
shape = "mesh"
file = "tet.obj"
position = [0.3, 0.0, 0.0]
scale = 0.5
[objects.material]
type = "plastic"
texture = { type = "image", file = "flat.png" }
[[objects]]
shape = "cylinder"
position = [-0.4, 0.2, 0.0]
scale = [0.2, 0.2, 0.4]
rotation_deg = [90, 0, 0]
[objects.material]
type = "conductor"
albedo = [0.9, 0.9, 0.9]
roughness = 0.2
[light]
type = "file"
file = "studio.exr"
intensity = 2.0
[test_light]
sun_elevation_deg = 10
"""


@pytest.fixture()
def spec_dir(tmp_path):
    save_mesh(tmp_path / "tet.obj", np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]) - 0.25, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    write_image(tmp_path / "flat.png", np.full((8, 8, 3), [0.2, 0.6, 0.4]))
    write_hdr(tmp_path / "studio.exr", np.full((16, 32, 3), 0.5, np.float32))
    (tmp_path / "scene.toml").write_text(SPEC)
    return tmp_path


def test_spec_file_mesh_image_texture_and_file_light(spec_dir, tmp_path):
    out = synthesize(tmp_path / "out", spec=spec_dir / "scene.toml", test_light=True, seed=3, **TINY)
    meta = read_transforms(out / "transforms_train.json").extras
    assert [o["name"] for o in meta["objects"]] == ["mesh0", "cylinder1"]
    assert [e["name"] for e in meta["envmaps"]] == ["studio", "test_light"]
    np.testing.assert_allclose(read_hdr(out / "envmaps" / "studio.exr"), 1.0)  # intensity applied, copied in
    views = load_views(out, "train", maps=("albedo", "instance"))
    tet = views.maps["instance"] == 1
    assert tet.any() and (views.maps["instance"] == 2).any()
    # the image texture is a flat colour stored in sRGB; the albedo map is that colour again
    expected = np.array([0.2, 0.6, 0.4])
    assert np.abs(views.maps["albedo"][tet].numpy() - expected).max() <= 1.5 / 255
    relight = load_views(out, "relight")
    test = load_views(out, "test")
    assert relight.lights == ["test_light"] and test.lights == ["studio"]
    np.testing.assert_array_equal(relight.c2w.numpy(), test.c2w.numpy())
    assert not np.allclose(relight.images.numpy(), test.images.numpy())
    # the same spec as JSON reads the same
    import tomllib

    (spec_dir / "scene.json").write_text(json.dumps(tomllib.loads(SPEC)))
    assert load_spec(spec_dir / "scene.json").objects == load_spec(spec_dir / "scene.toml").objects


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda s: s.replace('type = "conductor"', 'type = "conductor"\ncolour = [1, 0, 0]'), "objects[1].material.colour: unknown key"),
        (lambda s: "lights = 3\n" + s, "lights: unknown key"),
        (lambda s: s.replace('shape = "cylinder"', 'shape = "cone"'), "objects[1].shape: expected one of sphere, cube, cylinder, capsule, mesh, got 'cone'"),
        (lambda s: s.replace('file = "tet.obj"', 'file = "nope.obj"'), "objects[0].file: file not found"),
        (lambda s: s.replace("roughness = 0.2", "roughness = 2"), "objects[1].material.roughness: expected a value in [0.0, 1.0], got 2"),
        (lambda s: s.replace("sun_elevation_deg = 10", "sun_elevation = 10"), "test_light.sun_elevation: unknown key"),
        (lambda s: s.replace("radius = 3.0", "radius = 3.0\nzoom = 2"), "camera.zoom: unknown key"),
        (lambda s: s.replace('shape = "cylinder"', 'shape = "cylinder"\nname = "../evil"'), "objects[1].name: use letters"),
        (lambda s: s.replace("radius = 3.0", "radius = 1.5"), "camera.radius: 1.5 puts the cameras inside the scene box"),
    ],
)
def test_bad_spec_names_file_and_key(spec_dir, tmp_path, cli_error, edit, where):
    (spec_dir / "bad.toml").write_text(edit(SPEC))
    with pytest.raises(PhysinvError) as err:
        synthesize(tmp_path / "o", spec=spec_dir / "bad.toml", **TINY)
    assert f"bad.toml: {where}" in str(err.value)
    line = cli_error(["synth", "scene", "--out", str(tmp_path / "o"), "--spec", str(spec_dir / "bad.toml")])
    assert line.startswith("physinv: error: ") and f"bad.toml: {where}" in line


def test_objects_outside_the_aabb_are_refused(spec_dir):
    (spec_dir / "big.toml").write_text(SPEC.replace("scale = 0.5", "scale = 5"))
    with pytest.raises(PhysinvError, match=r"big.toml: aabb: the objects reach .* outside the aabb"):
        synthesize(spec_dir / "o", spec=spec_dir / "big.toml", **TINY)


def test_k_lights_cycle_over_training_views(tmp_path):
    out = synthesize(tmp_path / "k", views=5, test_views=2, res=16, spp=2, lights=3, progress=False)
    train = read_transforms(out / "transforms_train.json")
    assert [f.extras["light"] for f in train.frames] == ["sky0", "sky1", "sky2", "sky0", "sky1"]
    maps = [read_hdr(e["file_path"]) for e in train.extras["envmaps"]]
    assert len(maps) == 3 and all(not np.allclose(maps[0], m) for m in maps[1:])
    suns = [np.unravel_index(m.sum(-1).argmax(), m.shape[:2]) for m in maps]
    assert len(set(suns)) == 3  # three different sun positions
    assert [f.extras["light"] for f in read_transforms(out / "transforms_test.json").frames] == ["sky0", "sky1"]  # held-out views under the training lights
    assert not (out / "transforms_relight.json").exists()


def test_k_lights_differ_in_weather_not_only_in_sun_direction():
    """The varying-light skies must light an object differently (NeRD's data): the lit-to-shadowed
    irradiance ratio of a diffuse surface, facing the sun vs facing away, is the base sky's x>=2 on
    the clear day and x<=0.75 on the overcast one (measured 2.42, 7.27, 1.62; when only the sun's
    direction and tint changed, the three skies lit the capsule within a few per cent of each other)."""
    import torch

    from physinv.core.sg import equirect_solid_angles
    from physinv.synth.sky import light_variations, sun_direction

    def contrast(p: SkyParams) -> float:
        sky = sky_map(p)
        d = equirect_directions(*sky.shape[:2])
        omega = equirect_solid_angles(*sky.shape[:2], dtype=torch.float64).numpy()
        s = sun_direction(p)
        lum = sky.mean(-1) * omega
        return float((lum * (d @ s).clip(0)).sum() / (lum * (-d @ s).clip(0)).sum())

    base = SkyParams(height=32)
    skies = light_variations(3, base)
    c = [contrast(p) for p in skies]
    assert skies[0] == base and c[1] >= 2.0 * c[0] and c[2] <= 0.75 * c[0], c
    assert light_variations(1, base) == [base]


def test_equirect_convention_round_trip_and_sun():
    d = equirect_directions(16, 32)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)
    uv = direction_to_equirect(d, 16, 32)
    v, u = np.meshgrid(np.arange(16) + 0.5, np.arange(32) + 0.5, indexing="ij")
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)
    assert d[0, 0, 2] > 0.99 and abs(d[8, 16, 0] - 1.0) < 0.02  # row 0 = zenith; the centre looks along +x
    params = SkyParams(sun_elevation_deg=30, sun_azimuth_deg=120)
    sky = sky_map(params)
    row, col = np.unravel_index(sky.sum(-1).argmax(), sky.shape[:2])
    sun = equirect_directions(*sky.shape[:2])[row, col]
    assert np.degrees(np.arccos(sun[2])) == pytest.approx(60, abs=2)
    assert np.degrees(np.arctan2(sun[1], sun[0])) == pytest.approx(120, abs=3)


@pytest.mark.parametrize("variant", ["scalar_rgb"])
def test_mitsuba_sees_the_env_map_in_our_convention(tmp_path, variant):
    """A narrow camera looking along d sees our map's radiance for d (so relighting methods can read it)."""
    mi = variant_mod.use_variant(variant)
    params = SkyParams(sun_elevation_deg=20, sun_azimuth_deg=-60, sun_size_deg=15, sun_intensity=5, height=64)
    write_hdr(tmp_path / "sky.exr", sky_map(params))
    scene = mi.load_dict({
        "type": "scene", "integrator": {"type": "path", "max_depth": 1},
        "light": {"type": "envmap", "filename": str(tmp_path / "sky.exr"), "to_world": mi.ScalarTransform4f(envmap_to_world().tolist())},
    })
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(6, 3))
    dirs[:3] = [[0.94, 0.0, 0.34], [0.0, -0.7, 0.7], [0.5, -0.82, 0.34]]  # +x, a slant, near the sun
    for d in dirs / np.linalg.norm(dirs, axis=-1, keepdims=True):
        up = [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0]
        sensor = mi.load_dict({
            "type": "perspective", "fov": 0.5, "to_world": mi.ScalarTransform4f().look_at(origin=[0, 0, 0], target=d.tolist(), up=up),
            "film": {"type": "hdrfilm", "width": 1, "height": 1, "rfilter": {"type": "box"}},
            "sampler": {"type": "independent", "sample_count": 4},
        })
        seen = np.array(mi.render(scene, sensor=sensor)).reshape(-1)[:3]
        np.testing.assert_allclose(seen, sky_radiance(d, params), rtol=0.05, atol=0.01)


def test_variant_choice(monkeypatch):
    monkeypatch.setenv("PHYSINV_MITSUBA_VARIANT", "scalar_rgb")
    assert variant_mod.select_variant() == "scalar_rgb"
    monkeypatch.setenv("PHYSINV_MITSUBA_VARIANT", "gpu_magic")
    with pytest.raises(PhysinvError, match="PHYSINV_MITSUBA_VARIANT: unknown Mitsuba variant 'gpu_magic'"):
        variant_mod.select_variant()
    monkeypatch.delenv("PHYSINV_MITSUBA_VARIANT")
    assert variant_mod.select_variant() in ("scalar_rgb", "llvm_ad_rgb")
    assert all(variant_mod._version(p)[0] >= 17 or "llvm-" in p for p in variant_mod.find_libllvm())
    assert variant_mod._version("/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1") == (19, 1)
    assert variant_mod._version("/usr/lib/x86_64-linux-gnu/libLLVM-16.so.1")[0] == 16


def test_cli_scene_prints_one_json_line(tmp_path, capsys, cli_error, monkeypatch):
    monkeypatch.setenv("PHYSINV_MITSUBA_VARIANT", "scalar_rgb")
    _cli_ok(["synth", "scene", "--out", str(tmp_path / "d"), "--views", "2", "--test-views", "1", "--res", "16", "--spp", "2", "--seed", "4", "--device", "cpu"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["views"] == 2 and summary["resolution"] == [16, 16] and summary["variant"] == "scalar_rgb" and summary["seconds"] > 0
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["views"] == 2
    inspect = ["synth", "inspect", str(tmp_path / "d"), "--split", "test"]
    _cli_ok(inspect)
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["views"] == 1 and info["maps"] == ["depth", "normal", "albedo", "instance"]
    assert cli_error(["synth", "scene", "--out", str(tmp_path / "e"), "--lights", "0"]) == "physinv: error: --lights: expected an integer >= 1, got 0"


def test_builtin_relight_scene_is_one_smooth_shaded_capsule(tmp_path, monkeypatch, capsys, cli_error):
    """``--scene relight``: the capsule's normal maps follow its analytic surface (interpolated vertex
    normals; flat facets of the 96-segment mesh would be ~1-2 degrees off), and the test light is a key light."""
    import torch

    from physinv.core.camera import image_rays
    from physinv.synth.scene import object_transform
    from physinv.synth.spec import default_test_light, relight_scene

    monkeypatch.setenv("PHYSINV_MITSUBA_VARIANT", "scalar_rgb")
    out = tmp_path / "r"
    _cli_ok(["synth", "scene", "--scene", "relight", "--out", str(out), "--views", "2", "--test-views", "0", "--res", "32", "--spp", "2", "--device", "cpu"])
    spec = relight_scene()
    assert [o["shape"] for o in json.loads((out / "scene.json").read_text())["objects"]] == ["capsule"]
    m = object_transform(spec.objects[0])
    rot, scale, centre = m[:3, :3] / 0.8, 0.8, m[:3, 3]
    angles = []
    for frame in read_transforms(out / "transforms_train.json").frames:
        o, d = (a.numpy().astype(np.float64) for a in image_rays(torch.as_tensor(frame.c2w), torch.as_tensor(frame.intrinsics), frame.width, frame.height))
        depth, normal = np.load(frame.extras["depth_path"]), np.load(frame.extras["normal_path"])
        hit = depth > 0
        local = ((o + depth[..., None] * d)[hit] - centre) @ rot / scale  # object frame: segment z in [-0.5, 0.5], radius 0.5
        axis_point = np.stack([np.zeros(len(local)), np.zeros(len(local)), local[:, 2].clip(-0.5, 0.5)], -1)
        analytic = (local - axis_point) / np.linalg.norm(local - axis_point, axis=-1, keepdims=True) @ rot.T
        angles.append(np.degrees(np.arccos((normal[hit] * analytic).sum(-1).clip(-1, 1))))
    angles = np.concatenate(angles)
    assert len(angles) > 100 and angles.mean() < 0.3 and np.percentile(angles, 99) < 1.0
    train_sky, test_sky = spec.light.sky, default_test_light(spec.light.sky)
    assert test_sky.sun_intensity == 5 * train_sky.sun_intensity  # a key light, not a tinted sky
    capsys.readouterr()
    assert cli_error(["synth", "scene", "--scene", "cornell", "--out", str(tmp_path / "x")]) == "physinv: error: --scene: unknown built-in scene 'cornell' (known: objects, relight)"
