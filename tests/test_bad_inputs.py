"""Bad input: one clear line on stderr, exit 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import make_frames, run_cli
from hoirecon.io.video import write_video
from hoirecon.pipeline.runner import read_manifest


def _assert_one_line_error(code: int, stderr: str, expect: str, exit_code: int = 2):
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert code == exit_code, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hoirecon: error:") and expect in lines[0], lines[0]
    assert "Traceback" not in stderr


def _assert_no_frames(out):
    assert read_manifest(out / "frames") is None
    assert not list(out.glob(".frames.tmp-*")) if out.exists() else True


def test_missing_path(tmp_path):
    code, _, err = run_cli("frames", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "not found")


def test_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 100)
    code, _, err = run_cli("frames", str(bad), "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "cannot read video")
    _assert_no_frames(tmp_path / "o")


def _long_video(path, faststart: bool):
    frames = make_frames(40, 96, 128)
    write_video(path, frames, fps=10)
    if faststart:  # moov atom first, so a cut file still opens and decodes part of the frames
        from imageio_ffmpeg import get_ffmpeg_exe

        fixed = path.with_suffix(".fs.mp4")
        subprocess.run([get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(path), "-c", "copy",
                        "-movflags", "+faststart", str(fixed)], check=True)
        fixed.replace(path)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_video(tmp_path, faststart):
    video = tmp_path / "clip.mp4"
    _long_video(video, faststart)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli("frames", str(video), "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "truncated" if faststart else str(video.name))
    _assert_no_frames(tmp_path / "o")


def test_zero_frames(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("frames", str(empty), "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "no images")
    # a video container with an audio stream only has no video frames at all
    from imageio_ffmpeg import get_ffmpeg_exe

    audio = tmp_path / "audio.mp4"
    subprocess.run([get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
                    "-t", "0.5", str(audio)], check=True)
    code, _, err = run_cli("frames", str(audio), "--out", str(tmp_path / "o2"))
    _assert_one_line_error(code, err, "audio.mp4")


def test_unwritable_out_dir(tmp_path, tiny_video):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = run_cli("frames", str(tiny_video), "--out", str(blocker / "sub"))
    _assert_one_line_error(code, err, "cannot write to output folder")


@pytest.mark.parametrize("args,expect", [
    (["--stride", "abc"], "--stride"),
    (["--stride", "0"], "--stride"),
    (["--size", "4"], "--size"),
    (["--bogus"], "--bogus"),
])
def test_bad_option_values(tmp_path, tiny_video, args, expect):
    code, _, err = run_cli("frames", str(tiny_video), "--out", str(tmp_path / "o"), *args)
    _assert_one_line_error(code, err, expect)
    _assert_no_frames(tmp_path / "o")


def test_empty_category(tmp_path, tiny_video):
    # any other name is accepted (tests/test_stage_agreement.py); an empty one names nothing
    code, _, err = run_cli("run", str(tiny_video), "--category", " ", "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "--category must not be empty")


def test_json_error_summary(tmp_path):
    code, out, err = run_cli("frames", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--json")
    summary = json.loads(out)
    assert code == 2 and summary["ok"] is False and summary["exit_code"] == 2 and "not found" in summary["error"]


# ---------------------------------------------------------------- issue 20


@pytest.mark.parametrize("device,expect", [("banana", "supports cpu"), ("cuda", "supports cpu")])
def test_unavailable_device(tmp_path, tiny_video, device, expect):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(tmp_path / "o"), "--device", device)
    _assert_one_line_error(code, err, expect)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,expect", [
    (["fit", "OUT", "--steps", "abc"], "--steps"),
    (["fit", "OUT", "--bogus"], "--bogus"),
    (["run"], "Missing argument"),
    (["prior", "sample"], "--category"),
    (["fit", "OUT", "--device", "banana"], "--device"),
])
def test_json_on_command_line_errors(tmp_path, args, expect):
    args = [str(tmp_path) if a == "OUT" else a for a in args]
    code, out, err = run_cli(*args, "--json")
    _assert_one_line_error(code, err, expect)
    summary = json.loads(out)
    assert summary["ok"] is False and summary["exit_code"] == 2 and expect in summary["error"]
    assert summary["command"] == " ".join(a for a in args[:2] if not a.startswith(("-", "/")))


def test_size_zero_is_refused(tmp_path, tiny_video):
    code, _, err = run_cli("frames", str(tiny_video), "--out", str(tmp_path / "o"), "--size", "0")
    _assert_one_line_error(code, err, "--size")
    _assert_no_frames(tmp_path / "o")


def test_boxes_option_pointing_at_a_folder(tmp_path, tiny_video):
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(tmp_path / "o"), "--boxes", str(tmp_path))
    _assert_one_line_error(code, err, "is a folder")


@pytest.mark.parametrize("boxes,expect", [
    ({"hands": [1, 1, 20, 20], "obj": [20, 20, 40, 40]}, '"hands", "obj"'),
    ({"hand": [100, 100, 120, 120], "object": [10, 10, 30, 30]}, "64x48"),
])
def test_bad_boxes_file(tmp_path, tiny_video, boxes, expect):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(boxes))
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(tmp_path / "o"), "--boxes", str(path), "-q")
    _assert_one_line_error(code, err, expect)


@pytest.mark.parametrize("box,expect", [("nan,0,10,10", "finite"), ("0,0,inf,10", "finite"),
                                        ("200,200,300,300", "64x48")])
def test_bad_box_options(tmp_path, tiny_video, box, expect):
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(tmp_path / "o"), "--hand-box", box,
                           "--object-box", "10,10,30,30", "-q")
    _assert_one_line_error(code, err, expect)


def test_masks_dir_with_every_object_mask_empty(tmp_path, tiny_video):
    from hoirecon.io.masks import write_mask_folder

    hand = np.zeros((12, 48, 64), bool)
    hand[:, 10:30, 10:30] = True
    write_mask_folder(tmp_path / "m", hand, np.zeros_like(hand))
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(tmp_path / "o"), "--masks-dir", str(tmp_path / "m"),
                           "-q")
    _assert_one_line_error(code, err, "every object mask")


def test_one_frame_clip_warns_that_nothing_is_tracked(tmp_path):
    video = tmp_path / "one.mp4"
    write_video(video, make_frames(1), fps=10)
    code, out, err = run_cli("frames", str(video), "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    assert "nothing is tracked" in json.loads(out)["stages"]["frames"]["warnings"][0]
    code, _, err = run_cli("frames", str(video), "--out", str(tmp_path / "o2"))
    assert code == 0 and "warning" in err and "nothing is tracked" in err
