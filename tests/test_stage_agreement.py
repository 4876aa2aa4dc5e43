"""Issue 20 items 7 and 9: any object name reaches the prior (known ones conditioned, others
category-agnostic), and settings that must agree across stages are read back and checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from hoirecon.categories import UNKNOWN, category_name, normalize_category
from hoirecon.errors import UserError
from hoirecon.io.masks import write_mask_folder
from hoirecon.pipeline.report import Reporter
from hoirecon.pipeline.runner import read_manifest, run_stage, write_external_stage
from hoirecon.stages.fit import STAGE as FIT, FitConfig
from hoirecon.stages.configs import HandConfig
from hoirecon.stages.hand import _hand_side
from hoirecon.stages.masks import tracked_side
from hoirecon.stages.outputs import FramesMeta, MasksOutput
from test_fit import N_FRAMES, SIZE, tiny_clip  # noqa: F401  (tiny_clip is a fixture)


def test_any_category_name_is_accepted_and_known_ones_are_canonical():
    assert category_name("  Glue   Gun ") == "glue gun"
    assert category_name("Toy Car") == "toy_car" and category_name("cup") == "mug"
    assert FitConfig(category="glue gun").category == "glue gun"
    with pytest.raises(UserError, match="empty"):
        category_name("  ")
    with pytest.raises(UserError, match="'unknown' means any other object"):
        normalize_category("glue gun")  # where a known category is needed (synth's procedural objects)


def test_prior_conditions_on_known_names_and_runs_agnostic_otherwise():
    from hoirecon.fit.guidance import prior_category
    from hoirecon.prior.model import load_geometry_prior

    prior = load_geometry_prior(None, "cpu")
    assert prior_category(prior, "mug") == "mug"
    assert prior_category(prior, "glue gun") == UNKNOWN

    class TextPrior:  # DiffHOI's prior reads free text: every name is in its vocabulary
        pass

    assert prior_category(TextPrior(), "glue gun") == "glue gun"


class _Lines(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def _fit_folder(out: Path, clip, hand_model: str = "anny") -> None:
    import cv2

    def frames(d: Path):
        for t in range(N_FRAMES):
            cv2.imwrite(str(FramesMeta.frame_path(d, t)), np.zeros((SIZE, SIZE, 3), np.uint8))
        FramesMeta(fps=10, num_frames=N_FRAMES, size=(SIZE, SIZE)).save(d)

    def hands(d: Path):
        np.savez(d / "hands.npz", K=clip["K"].astype(np.float32),
                 T_cam_to_hand=clip["T_cam_to_hand"].astype(np.float32),
                 articulation=clip["articulation"], shape=np.zeros(10, np.float32), side=np.array("right"),
                 valid=np.ones(N_FRAMES, bool), hand_model=np.array(hand_model))

    write_external_stage(out, "frames", frames, "test")
    write_external_stage(out, "masks", lambda d: MasksOutput(hand=clip["hand"], obj=clip["obj"]).save(d), "test")
    write_external_stage(out, "hand", hands, "test")


def test_fit_records_the_category_given_and_the_one_used(tiny_clip, tmp_path):  # noqa: F811
    out = tmp_path / "clip"
    _fit_folder(out, tiny_clip)
    lines = _Lines()
    cfg = FitConfig(prior="hoirecon", category="glue gun", steps=2, rays_per_step=64, mesh_resolution=24,
                    preview_every=0)
    result = run_stage(out, FIT, cfg, reporter=lines)
    assert result.summary["category"] == "glue gun" and result.summary["category_used"] == UNKNOWN
    assert sum("glue gun" in line and "category-agnostic" in line for line in lines.lines) == 1
    summary = json.loads((out / "fit" / "summary.json").read_text())
    assert summary["category"] == "glue gun" and summary["category_used"] == UNKNOWN


def test_fit_refuses_a_hand_model_other_than_the_hand_stage_fitted(tiny_clip, tmp_path):  # noqa: F811
    out = tmp_path / "clip"
    _fit_folder(out, tiny_clip, hand_model="mano")
    with pytest.raises(UserError, match="--hand-model anny does not match the hand stage, which fitted mano"):
        run_stage(out, FIT, FitConfig(hand_model="anny", steps=1))


def test_the_side_the_masks_followed_is_read_back():
    tracked = {"config": {"side": "auto", "masks_dir": None, "tracker": "flow", "hand_landmarks": True}}
    assert tracked_side(tracked, {"side": {"side": "left", "from": "auto"}}) == "left"  # auto: what it resolved to
    assert tracked_side({"config": {**tracked["config"], "side": "left"}}, None) == "left"  # --side, older quality
    assert tracked_side(tracked, None) is None  # auto, and nothing says what it followed
    assert tracked_side({"config": {**tracked["config"], "masks_dir": "/my/masks"}}, None) is None  # your own masks
    assert tracked_side({"external": True, "config": {}}, None) is None  # synth's masks
    assert tracked_side(None, None) is None


def test_hand_side_must_match_the_side_the_masks_followed(tmp_path):
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    (masks_dir / "stage.json").write_text(json.dumps(
        {"config": {"side": "auto", "masks_dir": None, "tracker": "flow", "hand_landmarks": True}}))
    MasksOutput.save_quality(masks_dir, {"side": {"side": "left", "from": "auto"}})
    no_frames, no_masks = [], np.zeros((0, 4, 4), bool)
    said = []
    assert _hand_side(HandConfig(side="left"), masks_dir, no_frames, no_masks, said.append) == {"side": "left",
                                                                                                  "from": "--side"}
    assert _hand_side(HandConfig(), masks_dir, no_frames, no_masks, said.append) == {"side": "left", "from": "masks"}
    with pytest.raises(UserError, match="--side right does not match the masks stage, which followed a left hand"):
        _hand_side(HandConfig(side="right"), masks_dir, no_frames, no_masks, said.append)
    assert said == []
    # Masks that followed no hand, and no hand mask to read one from: a right hand, and the user is told.
    (masks_dir / "stage.json").write_text(json.dumps({"external": True, "config": {}}))
    side = _hand_side(HandConfig(), masks_dir, no_frames, no_masks, said.append)
    assert side["side"] == "right" and side["from"] == "auto" and side["readings"] == []
    assert len(said) == 1 and "does not tell a right hand from a left one" in said[0] and "--side left" in said[0]


def test_side_option_reaches_the_masks_stage(tmp_path, tiny_video):
    masks = tmp_path / "my_masks"
    hand = np.zeros((12, 48, 64), bool)
    hand[:, 10:30, 10:30] = True
    write_mask_folder(masks, hand, np.roll(hand, 20, axis=2))
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(tmp_path / "o"), "--masks-dir", str(masks),
                           "--side", "left", "--quiet")
    assert code == 0, err
    assert read_manifest(tmp_path / "o" / "masks")["config"]["side"] == "left"
