"""``physinv data from-images``: bad input is one line and exit 2 (the round trip on a rendered
scene is benchmarks/capture_roundtrip.py: it takes about a minute)."""

import numpy as np

from physinv.io.images import write_image


def test_fewer_than_three_images(tmp_path, cli_error):
    photos = tmp_path / "p"
    for i in range(2):
        write_image(photos / f"{i}.png", np.full((16, 16, 3), 0.5))
    (photos / "notes.txt").write_text("not an image")
    line = cli_error(["data", "from-images", str(photos), "--out", str(tmp_path / "o"), "--quiet"])
    assert line.endswith("/p: found 2 image(s); structure from motion needs at least 3")


def test_photos_that_do_not_register(tmp_path, cli_error):
    photos = tmp_path / "p"
    rng = np.random.default_rng(0)
    for i in range(3):  # independent noise: features, but no consistent matches
        write_image(photos / f"{i}.png", rng.uniform(0, 1, (48, 48, 3)))
    line = cli_error(["data", "from-images", str(photos), "--out", str(tmp_path / "o"), "--quiet"])
    assert line.endswith("/p: structure from motion found no model: none of the 3 photos could be registered (too few matching features: more overlap, texture or photos needed)")


def test_unknown_matcher(tmp_path, cli_error):
    photos = tmp_path / "p"
    for i in range(3):
        write_image(photos / f"{i}.png", np.full((16, 16, 3), 0.5))
    line = cli_error(["data", "from-images", str(photos), "--out", str(tmp_path / "o"), "--matcher", "vocab"])
    assert line == "physinv: error: --matcher: expected one of exhaustive, sequential, got 'vocab'"
