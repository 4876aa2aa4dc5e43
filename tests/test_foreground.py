"""hoirecon.segment.foreground: the hand / object split of a foreground, and the tracker built on it.

The split is tested on synthetic renders with the true union of hand and object standing in for
the learned foreground (the selfie model is trained on people, not on renders), and with the
object box drawn around the whole grasp, hand included, as 100DOH draws it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hoirecon.geometry.regions import mask_box, mask_iou
from hoirecon.io.video import read_rgb
from hoirecon.segment.detect import more_like
from hoirecon.segment.foreground import (
    ForegroundSplitTracker,
    SelfieForeground,
    background_plate,
    drop_still_background,
    first_frame_split,
    foreground_union,
    hand_coloured,
    hand_symmetric,
    keep_near_foreground,
    landmark_hand_seeds,
    object_gaps,
    rare_in,
    skin_coloured,
    static_foreground,
)
from hoirecon.stages.outputs import GroundTruth, MasksOutput
from hoirecon.synth.generator import generate_clip


def _clip(tmp_path: Path, category: str, seed: int, frames: int = 2):
    out = tmp_path / category
    generate_clip(category, out, frames=frames, size=160, seed=seed)
    images = [read_rgb(p) for p in sorted((out / "frames").glob("*.png"))]
    masks = MasksOutput.load(out / "masks", num_frames=frames, size_wh=(images[0].shape[1], images[0].shape[0]))
    hand, obj = masks.hand, masks.obj
    keypoints = np.load(GroundTruth.file(out))["keypoints_2d"]
    return images, hand, obj, keypoints


def _box_mask(shape, box) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


@pytest.mark.parametrize("category,seed", [("mug", 1), ("kettle", 3)])
def test_split_when_the_object_box_covers_the_hand(tmp_path, category, seed):
    images, hand, obj, keypoints = _clip(tmp_path, category, seed)
    image, hand, obj, kp = images[0], hand[0], obj[0], keypoints[0]
    hand_box, object_box = mask_box(hand), mask_box(hand | obj)  # the object box holds the whole hand
    in_object_box = _box_mask(hand.shape, object_box)
    seeds = landmark_hand_seeds(image, kp, np.zeros(hand.shape, bool), hand_coloured(image, kp, in_object_box))
    got_hand, got_obj = first_frame_split(image, (hand | obj).astype(np.float32), np.zeros(hand.shape, bool),
                                          seeds, hand_box, object_box)
    assert not (got_hand & got_obj).any()
    assert mask_iou(got_hand, hand) > 0.75 and mask_iou(got_obj, obj) > 0.75


def test_tracker_follows_a_clip_from_its_foreground_and_landmarks(tmp_path):
    T = 5
    images, hand, obj, keypoints = _clip(tmp_path, "mug", 1, frames=T)
    index = {im.tobytes(): t for t, im in enumerate(images)}
    truth = {k: (hand[t] | obj[t]).astype(np.float32) for k, t in index.items()}

    def seeder(image, warped_hand, warped_object):
        return landmark_hand_seeds(image, keypoints[index[image.tobytes()]], warped_object & ~warped_hand)

    tracker = ForegroundSplitTracker(lambda image: truth[image.tobytes()])
    out = tracker.track(images, np.stack([hand[0], obj[0]]), seeder)
    assert out.shape == (T, 2) + hand.shape[1:]
    assert min(mask_iou(out[t, 0], hand[t]) for t in range(T)) > 0.7
    assert min(mask_iou(out[t, 1], obj[t]) for t in range(T)) > 0.7


def test_static_foreground_is_what_never_moves():
    rng = np.random.default_rng(0)
    T, H, W = 6, 40, 60
    frames, probs = [], []
    for t in range(T):
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)  # a background that flickers
        image[5:15, 5:15] = 200  # a cupboard: foreground, still
        image[20:30, 10 + 5 * t:20 + 5 * t] = 60  # a held object: foreground, moving
        prob = np.zeros((H, W), np.float32)
        prob[5:15, 5:15] = 1.0
        prob[20:30, 10 + 5 * t:20 + 5 * t] = 1.0
        frames.append(image)
        probs.append(prob)
    still = static_foreground(frames, probs)
    assert still[5:15, 5:15].all() and not still[20:30].any() and not still[:, 40:].any()
    assert not static_foreground(frames[:2], probs[:2]).any()  # two frames cannot tell


def test_selfie_foreground_sees_nothing_in_a_flat_image():
    fg = SelfieForeground()
    prob = fg(np.full((48, 64, 3), 128, np.uint8))
    assert prob.shape == (48, 64) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0 and prob.mean() < 0.5


def test_foreground_union_leaves_the_unsure_clutter_behind_the_object():
    prob = np.zeros((200, 200), np.float32)
    prob[60:140, 100:160] = 0.95  # hand and object: sure
    prob[70:130, 96:100] = 0.6  # the object's soft outline: unsure, next to the sure part
    prob[40:160, 10:96] = 0.6  # a bus behind, touching the object: unsure, far from it
    anchor = np.zeros_like(prob, bool)
    anchor[100, 130] = True
    union = foreground_union(prob, anchor)
    reach = int(np.ceil(0.05 * 200))  # ForegroundSplitConfig.confident_reach of the short side
    assert union[60:140, 100:160].all() and union[70:130, 96:100].all()  # the sure part and its outline
    assert not union[:, :96 - reach].any()  # the bus beyond the reach
    # Nothing sure touches the anchor (a pale hand the segmenter doubts): the plain foreground.
    assert (foreground_union(np.where(prob > 0.9, 0.6, prob), anchor) == (prob > 0.5)).all()


def test_tracked_masks_lose_what_lies_far_from_the_foreground():
    prob = np.zeros((1, 100, 100), np.float32)
    prob[0, 20:60, 20:60] = 1.0
    masks = np.zeros((1, 2, 100, 100), bool)
    masks[0, 0, 20:60, 20:75] = True  # hand leaked to the right
    masks[0, 1, 70:90, 70:90] = True  # an object the foreground does not see at all
    out = keep_near_foreground(masks, prob)
    reach = int(np.ceil(0.03 * 100)) + 1
    assert out[0, 0, 20:60, 20:60].all() and not out[0, 0, :, 60 + reach:].any()
    assert (out[0, 1] == masks[0, 1]).all()  # unseen: kept whole


def test_skin_under_tinted_light_is_the_hands_own_colour():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :20] = (190, 178, 196)  # pale skin under a blue sky: chroma outside the usual range
    image[:, 20:40] = (22, 25, 34)  # a dark held object, chroma near the skin's
    image[:, 40:] = (40, 140, 60)  # green background
    palm = np.zeros((40, 60), bool)
    palm[10:30, 2:25] = True  # mostly hand, a little object
    assert not skin_coloured(image)[:, :20].any()
    skin = skin_coloured(image, palm)
    assert skin[:, :20].all() and not skin[:, 20:].any()
    usual = np.zeros_like(image)
    usual[:] = (200, 150, 120)  # a hand in the usual range keeps the usual rule
    assert (skin_coloured(usual, palm) == skin_coloured(usual)).all()


def test_rare_in_keeps_the_colours_the_background_hardly_shows():
    image = np.zeros((10, 40, 3), np.uint8)
    image[:, :10] = (0, 160, 170)  # a teal label
    image[:, 10:20] = (220, 190, 60)  # the wall, seen between the object's parts
    image[:, 20:] = (220, 190, 60)  # the wall around
    image[0, 25] = (0, 160, 170)  # one stray pixel of the label's colour in the background
    candidates, wall = np.zeros((10, 40), bool), np.zeros((10, 40), bool)
    candidates[:, :20], wall[:, 20:] = True, True
    got = rare_in(image, candidates, wall)
    assert got[:, :10].all() and not got[:, 10:].any()
    assert not rare_in(image, candidates, np.zeros_like(wall)).any()
    assert more_like(image, candidates, wall)[:, :10].all() and not more_like(image, wall, candidates)[:, :10].any()


def test_object_gaps_fill_a_cap_but_not_the_background_through_a_handle():
    wall, body, cap = (220, 190, 60), (30, 60, 70), (0, 160, 170)
    image = np.full((120, 160, 3), wall, np.uint8)
    obj = np.zeros((120, 160), bool)
    obj[20:100, 40:60] = obj[20:100, 80:100] = obj[20:30, 40:100] = True  # a U: two prongs and a bridge
    obj[40:70, 100:125] = True
    obj[48:62, 108:118] = False  # a handle with the wall seen through it
    image[obj] = body
    image[60:100, 60:80] = cap  # between the prongs: a part the masks missed, in a colour of its own
    image[100:120, 120:160] = cap  # the same colour in a corner, reaching out of the frame
    hand = np.zeros_like(obj)
    hand[100:120, 20:60] = True
    image[hand] = (200, 150, 120)
    gaps = object_gaps(image, hand, obj)
    assert gaps[60:100, 60:80].mean() > 0.9  # the part between the prongs joins the object
    assert not gaps[48:62, 108:118].any()  # the wall through the handle does not
    assert not gaps[30:60, 60:80].any()  # nor the wall between the prongs above the part
    assert not gaps[100:, 120:].any()  # nor what runs out of the frame
    assert not (gaps & (obj | hand)).any()


def _room_clip(shift_camera: bool = False, T: int = 8):
    """A textured still room, a red object moving right, a still label-coloured block, and masks
    [hand, object] whose object leaks into the floor under it; (frames, masks)."""
    rng = np.random.default_rng(0)
    H, W = 80, 120
    palette = np.array([[70, 70, 80], [150, 140, 130], [110, 120, 90], [190, 190, 200]], np.uint8)
    room = np.repeat(np.repeat(palette[rng.integers(0, 4, (H // 4, W // 4 + 8))], 4, 0), 4, 1)
    frames, masks = [], np.zeros((T, 2, H, W), bool)
    for t in range(T):
        x0 = 3 * t if shift_camera else 0
        image = room[:, x0:x0 + W].copy()
        ox = 10 + 8 * t
        image[20:40, ox:ox + 20] = (220, 30, 30)  # the held object
        image[20:40, 90:110] = (0, 170, 160)  # a label that never moves, in a colour of its own
        image[5:20, ox + 5:ox + 15] = (205, 150, 120)  # the hand above the object
        frames.append(image)
        masks[t, 0, 5:20, ox + 5:ox + 15] = True
        masks[t, 1, 20:40, ox:ox + 20] = True
        masks[t, 1, 40:46, ox:ox + 20] = True  # the leak into the floor
        masks[t, 1, 20:40, 90:110] = True
    return frames, masks


def test_still_background_leaks_leave_the_object():
    frames, masks = _room_clip()
    plate = background_plate(frames, masks.any(axis=(0, 1)))
    assert plate is not None
    out = drop_still_background(frames, masks, plate)
    for t in range(len(frames)):
        ox = 10 + 8 * t
        assert not out[t, 1, 42:46, ox:ox + 20].any()  # the floor leaves (bar the blur's 2 px fringe)
        assert out[t, 1, 20:40, ox:ox + 20].all()  # the moving object stays
        assert out[t, 1, 20:40, 90:110].all()  # the still label is not the room's colour: it stays
        assert (out[t, 0] == masks[t, 0]).all()


def test_still_background_needs_a_still_camera():
    frames, masks = _room_clip(shift_camera=True)
    assert background_plate(frames, masks.any(axis=(0, 1))) is None
    assert background_plate(*(x[:4] for x in _room_clip())) is None  # too few frames to tell


def test_an_object_that_is_mostly_background_coloured_keeps_its_mask():
    frames, masks = _room_clip()
    plate = background_plate(frames, masks.any(axis=(0, 1)))
    masks[:, 1, 46:70, :] = True  # a mask mostly made of the room: not a leak to trim
    out = drop_still_background(frames, masks, plate)
    assert (out[:, 1] == masks[:, 1]).all()


def test_the_foreground_of_a_hand_is_the_same_for_a_frame_and_its_mirror_image(tmp_path):
    """The segmenter alone is not mirror-symmetric (it doubted a left hand's palm); on the hand the cue is."""
    generate_clip("mug", tmp_path, frames=2, size=128, seed=0)
    frame = read_rgb(sorted((tmp_path / "frames").glob("*.png"))[0])
    mirrored = np.ascontiguousarray(frame[:, ::-1])
    fg = SelfieForeground()
    prob, mirror_prob = fg(frame), fg.mirrored(frame)
    np.testing.assert_allclose(fg(mirrored)[:, ::-1], mirror_prob, atol=1e-5)
    assert np.abs(mirror_prob - prob).max() > 0.1  # else this test shows nothing
    assert (prob > 0.5).mean() > 0.05  # the hand and mug are seen
    hand = np.zeros(prob.shape, bool)
    hand[:, : prob.shape[1] // 2] = True
    sym = hand_symmetric(prob, mirror_prob, hand)
    sym_of_mirror = hand_symmetric(fg(mirrored), fg.mirrored(mirrored), hand[:, ::-1])[:, ::-1]
    np.testing.assert_allclose(sym[hand], sym_of_mirror[hand], atol=1e-5)
    assert (sym[~hand] == prob[~hand]).all() and (sym >= prob).all()
    assert hand_symmetric(prob, None, hand) is prob
