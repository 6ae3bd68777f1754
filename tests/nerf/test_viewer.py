"""``physinv view``: a websocket client (what the browser is) asks the running viser server for a
frame from one camera; the frame it gets back equals the offline render from the same pose."""

import asyncio
import io
import math

import numpy as np
import pytest
import torch

from physinv.core.camera import look_at
from physinv.view import c2w_to_viewer, load_viewable, preview_intrinsics, render_for_camera, start_viewer, viewer_c2w


def test_viewer_pose_round_trip():
    c2w = look_at(torch.tensor([1.0, -2.0, 0.7], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    wxyz, pos = c2w_to_viewer(c2w.numpy())
    assert torch.allclose(viewer_c2w(wxyz, pos), c2w, atol=1e-12)
    K, w, h = preview_intrinsics(math.radians(50), 1.5, 40)
    assert (w, h) == (60, 40) and K[1] == pytest.approx(20 / math.tan(math.radians(25)))


def _decode_frames(raw: bytes) -> list[dict]:
    """viser's wire format: [8 B size][8 B compressed size][zstd msgpack][aligned binary buffers]."""
    import msgspec
    import zstandard

    size, csize = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
    payload = msgspec.msgpack.decode(zstandard.ZstdDecompressor().decompress(raw[16 : 16 + csize], max_output_size=size))
    buffers, offset = [], 16 + csize
    for n in payload["binaryBufferLengths"]:
        offset += (8 - offset % 8) % 8
        buffers.append(raw[offset : offset + n])
        offset += n

    def resolve(v):
        return buffers[v["__binary_index"]] if isinstance(v, dict) and "__binary_index" in v else v

    return [{k: resolve(v) for k, v in m.items()} for m in payload["messages"]]


async def _request_frame(port: int, wxyz, position, fov: float, width: int, height: int, timeout: float = 60.0) -> np.ndarray:
    import imageio.v3 as iio
    import msgspec
    import viser
    from viser._messages import ViewerCameraMessage
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None) as ws:
        msg = ViewerCameraMessage(wxyz=tuple(map(float, wxyz)), position=tuple(map(float, position)), fov=fov, near=0.01, far=100.0,
                                  image_height=height, image_width=width, look_at=(0.0, 0.0, 0.0), up_direction=(0.0, 0.0, 1.0))
        await ws.send(msgspec.msgpack.encode(msg.as_serializable_dict()))
        async with asyncio.timeout(timeout):
            while True:
                for m in _decode_frames(await ws.recv()):
                    if m.get("type") == "BackgroundImageMessage" and m.get("rgb_data"):
                        return iio.imread(io.BytesIO(bytes(m["rgb_data"])), extension=".png")


def test_served_frame_equals_offline_render(ngp_run):
    from physinv.nerf.api import load_run

    run_dir, _ = ngp_run
    viewer = start_viewer(run_dir, host="127.0.0.1", port=0, preview_height=24)
    try:
        c2w = look_at(torch.tensor([2.2, -1.5, 1.2], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
        wxyz, pos = c2w_to_viewer(c2w.numpy())
        fov, width, height = math.radians(45), 640, 480  # the browser canvas: aspect 4:3
        frame = asyncio.run(_request_frame(viewer.port, wxyz, pos, fov, width, height))
    finally:
        viewer.stop()
    run = load_run(run_dir)
    offline = run.render_image(c2w, *preview_intrinsics(fov, width / height, 24))["rgb"]
    expected = (offline.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert frame.shape == (24, 32, 3)
    assert np.array_equal(frame[..., :3], expected)
    assert np.array_equal(frame[..., :3], render_for_camera(load_viewable(run_dir), wxyz, pos, fov, width / height, 24))
    assert expected.std() > 5  # the run renders a scene, not a blank frame


def test_view_refuses_a_folder_without_a_run(tmp_path, cli_error):
    line = cli_error(["view", str(tmp_path)])
    assert line.endswith(f"{tmp_path}: not a run folder (no checkpoint.pt)")
