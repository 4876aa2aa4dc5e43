"""First-frame boxes from the user (issue 20 items 3-4): boxes.json keys, folders, boxes against the image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hoirecon.errors import UserError
from hoirecon.io.boxes import check_box, parse_box, read_boxes_file
from hoirecon.stages import masks as masks_stage
from hoirecon.stages.masks import MasksConfig, _first_frame_boxes
from hoirecon.stages.outputs import FramesMeta

META = FramesMeta(fps=10.0, num_frames=1, size=(64, 48), original_size=(128, 96), source="/nonexistent/clip.mp4")


def test_unknown_keys_in_boxes_file_are_refused(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"hands": [0, 0, 10, 10], "obj": [5, 5, 20, 20]}))
    with pytest.raises(UserError) as err:
        read_boxes_file(path)
    message = str(err.value)
    assert str(path) in message and '"hands"' in message and '"obj"' in message
    assert '"hand"' in message and '"object"' in message
    path.write_text("{}")
    with pytest.raises(UserError, match="no keys"):
        read_boxes_file(path)


def test_boxes_file_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        read_boxes_file(tmp_path)
    with pytest.raises(UserError, match="is a folder"):
        MasksConfig(boxes_file=str(tmp_path))


@pytest.mark.parametrize("text", ["nan,0,10,10", "0,0,inf,10", "0,0,1e400,10"])
def test_non_finite_box_options_are_refused(text):
    with pytest.raises(UserError, match="finite"):
        parse_box(text, "--hand-box")


def test_non_finite_box_in_file_is_refused(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text('{"hand": [NaN, 0, 10, 10]}')  # Python's json reads NaN
    with pytest.raises(UserError, match="finite"):
        read_boxes_file(path)


def test_box_outside_the_image_names_the_image_size():
    check_box((120, 90, 200, 200), "--hand-box", (128, 96))  # partly inside: fine
    for box in [(200, 10, 300, 50), (-50, -50, 0, 0), (0, 96, 10, 120)]:
        with pytest.raises(UserError, match="128x96"):
            check_box(box, "--hand-box", (128, 96))


def test_stage_checks_boxes_in_original_pixels():
    cfg = MasksConfig(hand_box=(130, 10, 160, 40), object_box=(10, 10, 50, 50), detector="boxes")
    with pytest.raises(UserError, match="hand box .*128x96"):
        _first_frame_boxes(cfg, META, [np.zeros((48, 64, 3), np.uint8)], "cpu")


def test_boxes_file_with_only_hand_says_the_object_was_detected(tmp_path, monkeypatch):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"hand": [0, 0, 40, 40]}))

    def fake_auto(frames, hand, obj, side, read_side=None):  # the detector itself is tested in test_detect
        # --side auto (the default): the boxes come first, the side is read from them
        assert obj is None and hand == (0, 0, 20, 20) and side == "auto"
        return hand, (20, 20, 40, 40), {"object": {"fill": 0.5}}

    monkeypatch.setattr(masks_stage, "_auto_boxes", fake_auto)
    lines = []
    cfg = MasksConfig(boxes_file=str(path), detector="auto")
    hand, obj, origin, _ = _first_frame_boxes(cfg, META, [np.zeros((48, 64, 3), np.uint8)], "cpu", lines.append)
    assert origin == "boxes file (hand), auto (object)"
    assert len(lines) == 1 and "object box was detected" in lines[0]
