"""The frames stage: videos and image folders, stride / max-frames / size, meta.json."""

from __future__ import annotations

import json

import numpy as np

from conftest import make_frames, run_cli
from hoirecon.io.video import read_rgb, write_png
from hoirecon.pipeline.runner import run_pipeline
from hoirecon.stages.frames import STAGE, FramesConfig, working_size
from hoirecon.stages.outputs import FramesMeta


def _run(out, **kw):
    return run_pipeline(out, [(STAGE, FramesConfig(**kw))])


def test_video_to_frames(tmp_path, tiny_video):
    _run(tmp_path / "o", source=str(tiny_video))
    frames_dir = tmp_path / "o" / "frames"
    paths = FramesMeta.frame_paths(frames_dir)
    assert len(paths) == 12
    meta = json.loads((frames_dir / FramesMeta.FILE).read_text())
    assert meta["num_frames"] == 12 and meta["size"] == [64, 48] and meta["original_size"] == [64, 48]
    assert abs(meta["fps"] - 10) < 1e-6 and len(meta["source_digest"]) == 64
    img = read_rgb(paths[3])
    ref = make_frames()[3]
    # H.264 is lossy: compare loosely, and check the square moved to the right place
    assert np.abs(img.astype(int) - ref.astype(int)).mean() < 12


def test_stride_max_frames_and_size(tmp_path, tiny_video):
    _run(tmp_path / "o", source=str(tiny_video), stride=2, max_frames=4, size=32)
    meta = json.loads((tmp_path / "o" / "frames" / FramesMeta.FILE).read_text())
    assert meta["num_frames"] == 4 and meta["stride"] == 2 and meta["size"] == [32, 24]
    assert abs(meta["fps"] - 5) < 1e-6
    assert read_rgb(FramesMeta.frame_paths(tmp_path / "o" / "frames")[0]).shape == (24, 32, 3)


def test_frame_budget_subsamples_a_long_clip_evenly(tmp_path, tiny_video):
    res = _run(tmp_path / "o", source=str(tiny_video), frame_budget=5)  # 12 frames: one in 3 kept
    meta = FramesMeta.load(tmp_path / "o" / "frames")
    assert (meta.num_frames, meta.stride) == (4, 3) and abs(meta.fps - 10 / 3) < 1e-6
    assert "one in 3" in res[0].summary["warnings"][0]
    assert np.abs(read_rgb(FramesMeta.frame_paths(tmp_path / "o" / "frames")[1]).astype(int)
                  - make_frames()[3].astype(int)).mean() < 12  # the 2nd kept frame is the clip's 4th
    for given, kept in (({"stride": 1}, 12), ({"max_frames": 6}, 6), ({"frame_budget": 12}, 12)):
        _run(tmp_path / "o", source=str(tiny_video), frame_budget=given.pop("frame_budget", 5), **given)
        meta = FramesMeta.load(tmp_path / "o" / "frames")
        assert (meta.num_frames, meta.stride) == (kept, 1)


def test_upright_phone_video_is_read_as_seen_and_quietly(tmp_path, tiny_video):
    """A video stored landscape with a 90-degree display rotation (as phones write it) gives
    upright frames, and the reader's size warning does not reach the user."""
    import subprocess

    import imageio_ffmpeg

    rotated = tmp_path / "upright.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90",
                    "-i", str(tiny_video), "-c", "copy", str(rotated)], check=True)
    code, _, err = run_cli("frames", str(rotated), "--out", str(tmp_path / "o"), "--quiet")
    assert code == 0 and err.strip() == ""
    meta = FramesMeta.load(tmp_path / "o" / "frames")
    assert meta.size == (48, 64) and meta.source_size == (48, 64)
    first = read_rgb(FramesMeta.frame_paths(tmp_path / "o" / "frames")[0]).astype(int)
    assert np.abs(first - np.rot90(make_frames()[0], 1).astype(int)).mean() < 12  # turned a quarter, anticlockwise


def test_image_folder(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, f in enumerate(make_frames(5)):
        write_png(src / f"img_{i}.png", f)
    write_png(src / "img_10.png", make_frames(11)[10])  # natural order: 10 comes last
    _run(tmp_path / "o", source=str(src))
    paths = FramesMeta.frame_paths(tmp_path / "o" / "frames")
    assert len(paths) == 6
    assert np.array_equal(read_rgb(paths[-1]), make_frames(11)[10])


def test_source_change_makes_frames_stale(tmp_path, tiny_video):
    r1 = _run(tmp_path / "o", source=str(tiny_video))
    r2 = _run(tmp_path / "o", source=str(tiny_video))
    assert r2[0].status == "cached"
    from hoirecon.io.video import write_video

    write_video(tiny_video, make_frames(8), fps=10)
    r3 = _run(tmp_path / "o", source=str(tiny_video))
    assert r1[0].status == "ran" and r3[0].status == "ran"
    assert len(FramesMeta.frame_paths(tmp_path / "o" / "frames")) == 8


def test_working_size_only_shrinks_and_is_even():
    assert working_size(640, 480, 320) == (320, 240)
    assert working_size(100, 50, 640) == (100, 50)
    w, h = working_size(641, 479, 321)
    assert w % 2 == 0 and h % 2 == 0 and max(w, h) <= 322


def test_cli_frames_and_status(tmp_path, tiny_video):
    out = tmp_path / "o"
    code, stdout, _ = run_cli("frames", str(tiny_video), "--out", str(out), "--quiet", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["ok"] and summary["stages"]["frames"]["num_frames"] == 12
    code, stdout, _ = run_cli("status", str(out), "--json")
    rows = {r["stage"]: r["state"] for r in json.loads(stdout)["stages"]}
    assert code == 0 and rows["frames"] == "done" and rows["fit"] == "missing"
