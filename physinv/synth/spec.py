"""Scene specifications for :func:`physinv.synth.scene.synthesize`: parsing, validation, the default scene.

A spec is a TOML or JSON file (paths inside are relative to it)::

    aabb = [[-1, -1, -1], [1, 1, 1]]          # optional; default: the objects' box, padded
    [camera]                                  # optional
    radius = 3.2                              # distance of the cameras to the aabb centre
    fov_deg = 40.0                            # horizontal field of view
    min_elevation_deg = 10.0                  # cameras on the upper hemisphere, between these
    max_elevation_deg = 70.0
    [[objects]]
    shape = "sphere"                          # sphere | cube | cylinder | capsule | mesh
    file = "bunny.obj"                        # mesh only (anything trimesh reads)
    name = "ball"                             # optional
    position = [0, 0, 0]                      # world translation
    rotation_deg = [0, 0, 0]                  # XYZ Euler angles, degrees
    scale = 0.3                               # or [sx, sy, sz]; sphere radius = scale; cube half-side;
                                              # cylinder radius (x, y) and half-height (z); capsule:
                                              # radius 0.5 scale, half-length (caps included) scale
    [objects.material]
    type = "diffuse"                          # diffuse | plastic | conductor (rough conductor)
    albedo = [0.8, 0.2, 0.2]                  # linear RGB base colour
    roughness = 0.3                           # perceptual roughness r; Mitsuba's GGX alpha = r**2
    texture = { type = "checkerboard", colour0 = [0.9, 0.9, 0.9], colour1 = [0.1, 0.1, 0.1], tiles = 8 }
    # or texture = { type = "image", file = "wood.png" }   (replaces albedo)
    [light]                                   # the training light (and of the test views)
    type = "sky"                              # sky (see physinv.synth.sky.SkyParams) | file
    sun_elevation_deg = 45
    # type = "file", file = "studio.exr", intensity = 1.0
    [test_light]                              # same keys; used by --test-light

Unknown keys are errors naming the file and the key, e.g.
``scene.toml: objects[1].material: colour: unknown key (known: albedo, roughness, texture, type)``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from physinv.errors import input_error
from physinv.synth.sky import SkyParams

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SHAPES = ("sphere", "cube", "cylinder", "capsule", "mesh")
MATERIALS = ("diffuse", "plastic", "conductor")
TEXTURES = ("checkerboard", "image")


@dataclass
class TextureSpec:
    type: str = "checkerboard"
    colour0: list[float] = field(default_factory=lambda: [0.9, 0.9, 0.9])
    colour1: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1])
    tiles: float = 8.0
    file: Path | None = None


@dataclass
class MaterialSpec:
    type: str = "diffuse"
    albedo: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.8])
    roughness: float = 0.5
    texture: TextureSpec | None = None

    @property
    def alpha(self) -> float:
        """Mitsuba's GGX alpha from the perceptual roughness (Disney/Burley: alpha = r^2)."""
        return max(self.roughness, 1e-3) ** 2


@dataclass
class ObjectSpec:
    shape: str
    name: str = ""
    file: Path | None = None
    position: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    rotation_deg: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    material: MaterialSpec = field(default_factory=MaterialSpec)


@dataclass
class LightSpec:
    type: str = "sky"
    sky: SkyParams = field(default_factory=SkyParams)
    file: Path | None = None
    intensity: float = 1.0


@dataclass
class CameraSpec:
    radius: float = 3.2
    fov_deg: float = 40.0
    min_elevation_deg: float = 10.0
    max_elevation_deg: float = 70.0


@dataclass
class SceneSpec:
    objects: list[ObjectSpec]
    light: LightSpec = field(default_factory=LightSpec)
    test_light: LightSpec | None = None
    aabb: list[list[float]] | None = None
    camera: CameraSpec = field(default_factory=CameraSpec)
    source: str = "default scene"


# ----------------------------------------------------------------------------------------------
# the built-in scene: three objects of three materials inside [-1, 1]^3


def default_scene() -> SceneSpec:
    """A plastic sphere, a checkerboard diffuse cube and a gold rough-conductor cylinder, inside [-1, 1]^3."""
    return SceneSpec(
        objects=[
            ObjectSpec("sphere", "sphere", position=[0.45, -0.35, 0.0], scale=[0.4] * 3,
                       material=MaterialSpec("plastic", albedo=[0.1, 0.25, 0.7], roughness=0.35)),
            ObjectSpec("cube", "cube", position=[-0.45, -0.3, -0.1], rotation_deg=[0.0, 0.0, 30.0], scale=[0.3] * 3,
                       material=MaterialSpec("diffuse", texture=TextureSpec("checkerboard", [0.85, 0.8, 0.7], [0.6, 0.1, 0.08], 4.0))),
            ObjectSpec("cylinder", "cylinder", position=[0.0, 0.5, -0.05], scale=[0.25, 0.25, 0.35],
                       material=MaterialSpec("conductor", albedo=[0.95, 0.7, 0.3], roughness=0.4)),
        ],
        aabb=[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]],
    )


def relight_scene() -> SceneSpec:
    """One checkerboard plastic capsule (smooth shading), tilted, inside [-1, 1]^3: the single-object
    setting of PhySG and NeRD (no other object to cast shadows or inter-reflect, a dielectric's
    monochrome specular), for ``--scene relight``."""
    return SceneSpec(
        objects=[
            ObjectSpec("capsule", "capsule", rotation_deg=[0.0, 60.0, 30.0], scale=[0.8] * 3,
                       material=MaterialSpec("plastic", roughness=0.35, texture=TextureSpec("checkerboard", [0.85, 0.8, 0.7], [0.6, 0.1, 0.08], 4.0))),
        ],
        aabb=[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]],
        source="built-in relight scene",
    )


BUILTIN_SCENES = {"objects": default_scene, "relight": relight_scene}


def default_test_light(train: SkyParams) -> SkyParams:
    """A second sky for relighting ground truth: a low warm key light on the other side. The sun is
    5x the training sun and the sky half as bright, so the key light carries most of the light (with
    the training sky's sun, a low sun adds only ~10-25 % to the sky's irradiance and relit images
    differ from the training light's mostly by a colour cast, which median alignment removes)."""
    p = SkyParams(**train.to_dict())
    p.sun_azimuth_deg = (train.sun_azimuth_deg + 180.0) % 360.0
    p.sun_elevation_deg = 20.0
    p.sun_intensity = 5.0 * train.sun_intensity
    p.sun_colour = [1.0, 0.6, 0.35]
    p.zenith_colour = [0.15, 0.125, 0.225]
    p.horizon_colour = [0.45, 0.3, 0.2]
    p.ground_colour = [0.5 * c for c in train.ground_colour]
    return p


# ----------------------------------------------------------------------------------------------
# parsing


class _Reader:
    """Typed access to one table of the spec with errors naming ``<file>: <where>: <key>``."""

    def __init__(self, table: Any, known: tuple[str, ...], source: str, where: str):
        self.source, self.where = source, where
        if not isinstance(table, dict):
            raise input_error(source, where or None, "expected a table/object")
        for key in table:
            if key not in known:
                raise input_error(source, self._at(key), f"unknown key (known: {', '.join(sorted(known))})")
        self.table = table

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.table

    def number(self, key: str, default: float, lo: float = -math.inf, hi: float = math.inf) -> float:
        v = self.table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise input_error(self.source, self._at(key), f"expected a number, got {v!r}")
        if not lo <= v <= hi:
            raise input_error(self.source, self._at(key), f"expected a value in [{lo}, {hi}], got {v}")
        return float(v)

    def vector(self, key: str, default: list[float], n: int = 3, lo: float = -math.inf) -> list[float]:
        v = self.table.get(key, default)
        if not isinstance(v, list) or len(v) != n or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in v):
            raise input_error(self.source, self._at(key), f"expected a list of {n} numbers, got {v!r}")
        if any(x < lo for x in v):
            raise input_error(self.source, self._at(key), f"expected values >= {lo}, got {v!r}")
        return [float(x) for x in v]

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        if key not in self.table and default is None:
            raise input_error(self.source, self._at(key), f"missing (one of {', '.join(options)})")
        v = self.table.get(key, default)
        if v not in options:
            raise input_error(self.source, self._at(key), f"expected one of {', '.join(options)}, got {v!r}")
        return v

    def string(self, key: str, default: str) -> str:
        v = self.table.get(key, default)
        if not isinstance(v, str):
            raise input_error(self.source, self._at(key), f"expected a string, got {v!r}")
        return v

    def file(self, key: str, base: Path) -> Path:
        v = self.table.get(key)
        if not isinstance(v, str) or not v:
            raise input_error(self.source, self._at(key), "expected a file name")
        path = Path(v) if Path(v).is_absolute() else base / v
        if not path.is_file():
            raise input_error(self.source, self._at(key), f"file not found: {path}")
        return path


def _texture(table: Any, source: str, where: str, base: Path) -> TextureSpec:
    r = _Reader(table, ("type", "colour0", "colour1", "color0", "color1", "tiles", "file"), source, where)
    kind = r.choice("type", TEXTURES)
    if kind == "image":
        return TextureSpec("image", file=r.file("file", base))
    d = TextureSpec()
    c0 = r.vector("colour0" if r.has("colour0") else "color0", d.colour0, lo=0.0)
    c1 = r.vector("colour1" if r.has("colour1") else "color1", d.colour1, lo=0.0)
    return TextureSpec("checkerboard", c0, c1, r.number("tiles", d.tiles, lo=1e-3))


def _material(table: Any, source: str, where: str, base: Path) -> MaterialSpec:
    r = _Reader(table, ("type", "albedo", "roughness", "texture"), source, where)
    d = MaterialSpec()
    tex = _texture(r.table["texture"], source, f"{where}.texture", base) if r.has("texture") else None
    return MaterialSpec(
        r.choice("type", MATERIALS, "diffuse"), r.vector("albedo", d.albedo, lo=0.0), r.number("roughness", d.roughness, 0.0, 1.0), tex
    )


def _object(table: Any, source: str, where: str, base: Path, index: int) -> ObjectSpec:
    r = _Reader(table, ("shape", "name", "file", "position", "rotation_deg", "scale", "material"), source, where)
    shape = r.choice("shape", SHAPES)
    scale_raw = r.table.get("scale", 1.0)
    if isinstance(scale_raw, (int, float)) and not isinstance(scale_raw, bool):
        scale = [r.number("scale", 1.0, lo=1e-6)] * 3
    else:
        scale = r.vector("scale", [1.0] * 3, lo=1e-6)
        if any(s <= 0 for s in scale):
            raise input_error(source, f"{where}.scale", "expected positive values")
    if shape == "sphere" and not (scale[0] == scale[1] == scale[2]):
        raise input_error(source, f"{where}.scale", "a sphere needs a uniform scale (use shape = \"mesh\" for ellipsoids)")
    file = r.file("file", base) if shape == "mesh" else None
    if shape != "mesh" and r.has("file"):
        raise input_error(source, f"{where}.file", f"only meshes take a file (shape is {shape})")
    material = _material(r.table["material"], source, f"{where}.material", base) if r.has("material") else MaterialSpec()
    name = r.string("name", f"{shape}{index}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise input_error(source, f"{where}.name", f"use letters, digits, '_', '-' or '.' (it names meshes/<name>.ply), got {name!r}")
    return ObjectSpec(shape, name, file, r.vector("position", [0.0] * 3), r.vector("rotation_deg", [0.0] * 3), scale, material)


def _light(table: Any, source: str, where: str, base: Path) -> LightSpec:
    sky_keys = tuple(SkyParams.__dataclass_fields__)
    r = _Reader(table, ("type", "file", *sky_keys), source, where)
    kind = r.choice("type", ("sky", "file"), "sky")
    if kind == "file":
        for k in r.table:
            if k not in ("type", "file", "intensity"):
                raise input_error(source, f"{where}.{k}", "not a key of a file light (known: file, intensity, type)")
        path = r.file("file", base)
        if path.suffix.lower() not in (".exr", ".hdr"):
            raise input_error(source, f"{where}.file", f"expected an .exr or .hdr environment map, got {path.name}")
        return LightSpec("file", file=path, intensity=r.number("intensity", 1.0, lo=0.0))
    if r.has("file"):
        raise input_error(source, f"{where}.file", 'only lights of type = "file" take a file')
    d = SkyParams()
    sky = SkyParams(
        sun_elevation_deg=r.number("sun_elevation_deg", d.sun_elevation_deg, -90.0, 90.0),
        sun_azimuth_deg=r.number("sun_azimuth_deg", d.sun_azimuth_deg),
        sun_intensity=r.number("sun_intensity", d.sun_intensity, lo=0.0),
        sun_colour=r.vector("sun_colour", d.sun_colour, lo=0.0),
        sun_size_deg=r.number("sun_size_deg", d.sun_size_deg, 0.1, 90.0),
        zenith_colour=r.vector("zenith_colour", d.zenith_colour, lo=0.0),
        horizon_colour=r.vector("horizon_colour", d.horizon_colour, lo=0.0),
        ground_colour=r.vector("ground_colour", d.ground_colour, lo=0.0),
        intensity=r.number("intensity", d.intensity, lo=0.0),
        height=int(r.number("height", d.height, 8, 4096)),
    )
    return LightSpec("sky", sky=sky)


def parse_spec(data: Any, source: str, base: Path) -> SceneSpec:
    """Validate a spec already decoded to dicts/lists (``source`` names it in errors)."""
    r = _Reader(data, ("objects", "light", "test_light", "aabb", "camera"), source, "")
    objects_raw = r.table.get("objects")
    if not isinstance(objects_raw, list) or not objects_raw:
        raise input_error(source, "objects", "expected a non-empty list of objects ([[objects]] tables)")
    objects = [_object(o, source, f"objects[{i}]", base, i) for i, o in enumerate(objects_raw)]
    names = [o.name for o in objects]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise input_error(source, "objects", f"duplicate object name(s): {', '.join(dup)}")
    aabb = None
    if r.has("aabb"):
        box = r.table["aabb"]
        if not (isinstance(box, list) and len(box) == 2):
            raise input_error(source, "aabb", "expected [[xmin, ymin, zmin], [xmax, ymax, zmax]]")
        lo = _Reader({"lo": box[0]}, ("lo",), source, "aabb").vector("lo", [0.0] * 3)
        hi = _Reader({"hi": box[1]}, ("hi",), source, "aabb").vector("hi", [0.0] * 3)
        if any(h <= l for l, h in zip(lo, hi)):
            raise input_error(source, "aabb", "max must exceed min on every axis")
        aabb = [lo, hi]
    cam = CameraSpec()
    if r.has("camera"):
        c = _Reader(r.table["camera"], tuple(CameraSpec.__dataclass_fields__), source, "camera")
        cam = CameraSpec(
            c.number("radius", cam.radius, lo=1e-3),
            c.number("fov_deg", cam.fov_deg, 1.0, 170.0),
            c.number("min_elevation_deg", cam.min_elevation_deg, -89.0, 89.0),
            c.number("max_elevation_deg", cam.max_elevation_deg, -89.0, 89.0),
        )
        if cam.max_elevation_deg < cam.min_elevation_deg:
            raise input_error(source, "camera.max_elevation_deg", "must be >= min_elevation_deg")
    light = _light(r.table["light"], source, "light", base) if r.has("light") else LightSpec()
    test_light = _light(r.table["test_light"], source, "test_light", base) if r.has("test_light") else None
    return SceneSpec(objects, light, test_light, aabb, cam, source)


def load_spec(path: str | Path) -> SceneSpec:
    """Read a ``.toml`` or ``.json`` scene spec (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "scene spec not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as err:
        raise input_error(path, None, f"not valid JSON (line {err.lineno}: {err.msg})") from None
    except tomllib.TOMLDecodeError as err:
        raise input_error(path, None, f"not valid TOML ({err})") from None
    return parse_spec(data, str(path), path.parent.resolve())
