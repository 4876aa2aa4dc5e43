"""Bad input: one clear line on stderr, exit 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import subprocess

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


def test_unknown_category(tmp_path, tiny_video):
    code, _, err = run_cli("run", str(tiny_video), "--category", "spaceship", "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "unknown category")


def test_json_error_summary(tmp_path):
    code, out, err = run_cli("frames", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--json")
    summary = json.loads(out)
    assert code == 2 and summary["ok"] is False and summary["exit_code"] == 2 and "not found" in summary["error"]
