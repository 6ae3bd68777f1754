"""Choosing the Mitsuba 3 variant: ``llvm_ad_rgb`` when a usable libLLVM is present, else ``scalar_rgb``.

A bad libLLVM (e.g. 16 with drjit 1.5) does not raise: it *aborts the process* with an LLVM error.
So usability is tested by rendering a tiny scene in a subprocess, once per process (the answer is
cached). A libLLVM >= 17 found on the system is passed to drjit through ``DRJIT_LIBLLVM_PATH``.
``PHYSINV_MITSUBA_VARIANT=scalar_rgb|llvm_ad_rgb|cuda_ad_rgb`` forces a variant without probing.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

from physinv.errors import PhysinvError

ENV_VARIANT = "PHYSINV_MITSUBA_VARIANT"
SUPPORTED = ("scalar_rgb", "llvm_ad_rgb", "cuda_ad_rgb")
_LIB_PATTERNS = (
    "/usr/lib/x86_64-linux-gnu/libLLVM.so.*",
    "/usr/lib/x86_64-linux-gnu/libLLVM-*.so*",
    "/usr/lib/aarch64-linux-gnu/libLLVM.so.*",
    "/usr/lib/aarch64-linux-gnu/libLLVM-*.so*",
    "/usr/lib/llvm-*/lib/libLLVM*.so*",
    "/usr/lib64/libLLVM*.so*",
    "/usr/local/lib/libLLVM*.so*",
    "/opt/homebrew/opt/llvm/lib/libLLVM.dylib",
)
_PROBE = """
import mitsuba as mi
mi.set_variant("{variant}")
scene = mi.load_dict({{"type": "scene", "integrator": {{"type": "path", "max_depth": 3}},
    "sensor": {{"type": "perspective", "film": {{"type": "hdrfilm", "width": 4, "height": 4}}}},
    "light": {{"type": "constant"}},
    "ball": {{"type": "sphere", "center": [0, 0, 3], "bsdf": {{"type": "roughconductor"}}}}}})
img = mi.render(scene, spp=2)
import numpy as np
assert np.isfinite(np.array(img)).all()
print("physinv-probe-ok")
"""
_cache: dict[str, str] = {}


def _version(path: str) -> tuple[int, ...]:
    numbers = re.findall(r"(\d+(?:\.\d+)*)", os.path.basename(path))
    return tuple(int(x) for x in numbers[0].split(".")) if numbers else (0,)


def find_libllvm(min_major: int = 17) -> list[str]:
    """Candidate libLLVM shared libraries of major version >= ``min_major``, newest first."""
    found = {p for pattern in _LIB_PATTERNS for p in glob.glob(pattern)}
    versioned = []
    for p in found:
        v = _version(p)
        if "llvm-" in p:  # /usr/lib/llvm-18/lib/libLLVM.so: the version is in the folder
            m = re.search(r"llvm-(\d+)", p)
            v = (int(m.group(1)),) if m else v
        if v and v[0] >= min_major:
            versioned.append((v, p))
    return [p for _, p in sorted(versioned, reverse=True)]


def _probe(variant: str, env: dict[str, str], timeout: float = 180.0) -> bool:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE.format(variant=variant)], env=env, capture_output=True, text=True, timeout=timeout
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return proc.returncode == 0 and "physinv-probe-ok" in proc.stdout


def select_variant(prefer_cuda: bool = False) -> str:
    """The Mitsuba variant to use (cached per process): forced by ``PHYSINV_MITSUBA_VARIANT``,
    else ``cuda_ad_rgb`` when ``prefer_cuda`` and it works, else ``llvm_ad_rgb`` with a working
    libLLVM (sets ``DRJIT_LIBLLVM_PATH``), else ``scalar_rgb``."""
    forced = os.environ.get(ENV_VARIANT, "").strip()
    if forced:
        if forced not in SUPPORTED:
            raise PhysinvError(f"{ENV_VARIANT}: unknown Mitsuba variant '{forced}' (supported: {', '.join(SUPPORTED)})")
        return forced
    key = "cuda" if prefer_cuda else "cpu"
    if key in _cache:
        return _cache[key]
    variant = "scalar_rgb"
    if prefer_cuda and _probe("cuda_ad_rgb", dict(os.environ)):
        variant = "cuda_ad_rgb"
    else:
        candidates = ([os.environ["DRJIT_LIBLLVM_PATH"]] if os.environ.get("DRJIT_LIBLLVM_PATH") else []) + find_libllvm()
        for lib in dict.fromkeys(candidates):
            if _probe("llvm_ad_rgb", {**os.environ, "DRJIT_LIBLLVM_PATH": lib}):
                os.environ["DRJIT_LIBLLVM_PATH"] = lib  # read by drjit when the LLVM backend starts
                variant = "llvm_ad_rgb"
                break
    _cache[key] = variant
    return variant


def use_variant(variant: str):
    """Import mitsuba and switch it to ``variant``; returns the module."""
    import mitsuba as mi

    if variant not in mi.variants():
        raise PhysinvError(f"Mitsuba variant '{variant}' is not available in this build (have: {', '.join(mi.variants())})")
    if mi.variant() != variant:
        mi.set_variant(variant)
    return mi
