"""The masks stage: boxes -> GrabCut -> flow tracking, forward-backward IoU filter, mask I/O checks."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from conftest import run_cli
from hoirecon.errors import UserError
from hoirecon.geometry.regions import mask_iou
from hoirecon.io.masks import read_mask_folder, write_mask_folder
from hoirecon.io.video import write_video
from hoirecon.pipeline.runner import read_manifest, run_pipeline
from hoirecon.segment.classic import FlowTracker, TrackerConfig, grabcut, segment_hand_object
from hoirecon.stages.frames import STAGE as FRAMES, FramesConfig
from hoirecon.io.boxes import parse_box
from hoirecon.stages.masks import STAGE as MASKS, MasksConfig
from hoirecon.stages.outputs import MasksOutput

H, W = 96, 128


def _scene(t: int, teleport: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured background, a skin-coloured 'hand' disc and a blue 'object' box moving together.

    teleport: the pair leaves the frame (the last frames show background only), so no track
        can come back to the first-frame masks.
    """
    rng = np.random.default_rng(0)
    bg = (rng.random((H // 8, W // 8, 3)) * 60 + 90).astype(np.uint8)
    img = np.kron(bg, np.ones((8, 8, 1), np.uint8))
    yy, xx = np.mgrid[:H, :W]
    cx, cy = 40 + 2 * t, 48
    if teleport:
        cx = 40 + 16 * t
    obj = (abs(xx - cx) < 14) & (abs(yy - cy) < 20)
    hand = ((xx - (cx + 22)) ** 2 + (yy - (cy - 4)) ** 2) < 11 ** 2
    img[obj] = (30, 60, 200)
    img[hand] = (225, 170, 140)
    obj &= ~hand
    return img, hand, obj


def _clip(tmp_path, teleport=False, n=10):
    frames, hands, objs = zip(*[_scene(t, teleport) for t in range(n)])
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=10)
    return path, np.stack(hands), np.stack(objs)


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert mask_iou(a, b) == 1.0
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)


def test_first_frame_cut_and_tracker_follow_the_object():
    frames, hands, objs = zip(*[_scene(t) for t in range(8)])
    first_hand, first_obj = segment_hand_object(frames[0], _box(hands[0]), (24, 26, 56, 70))
    assert mask_iou(first_obj, objs[0]) > 0.8 and mask_iou(first_hand, hands[0]) > 0.8
    tracked = FlowTracker().track(list(frames), np.stack([hands[0], objs[0]]))
    assert tracked.shape == (8, 2, H, W)
    assert mask_iou(tracked[-1, 1], objs[-1]) > 0.75 and mask_iou(tracked[-1, 0], hands[-1]) > 0.7


def _thin_scene(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A skin-coloured 'hand' disc gripping a 4 px wide dark blue 'blade' that shows above and
    below it (two pieces), moving and slowly turning together over a textured background."""
    rng = np.random.default_rng(1)
    bg = (rng.random((H // 8, W // 8, 3)) * 50 + 110).astype(np.uint8)
    img = np.kron(bg, np.ones((8, 8, 1), np.uint8))
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    cx, cy, angle = 50 + 1.5 * t, 48 + 0.5 * t, np.deg2rad(2.0 * t)
    # distance across and along the blade's axis
    across = (xx - cx) * np.cos(angle) - (yy - cy) * np.sin(angle)
    along = (xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    blade = (np.abs(across) < 2) & (np.abs(along) < 38)
    hand = (xx - cx) ** 2 + (yy - cy) ** 2 < 14 ** 2
    img[blade] = (30, 40, 150)
    img[hand] = (225, 170, 140)
    return img, hand, blade & ~hand


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_first_frame_joint_segmentation_keeps_a_blade_split_by_the_hand():
    image, hand, blade = _thin_scene(0)
    masks = segment_hand_object(image, _box(hand), _box(blade))
    assert masks.shape == (2, H, W) and not (masks[0] & masks[1]).any()
    assert mask_iou(masks[0], hand) > 0.85
    # both pieces (above and below the fingers), not only the larger one
    assert mask_iou(masks[1], blade) > 0.75
    assert masks[1][:34].any() and masks[1][62:].any()


def test_tracker_keeps_a_thin_object_split_by_the_hand():
    frames, hands, blades = zip(*[_thin_scene(t) for t in range(10)])
    tracked = FlowTracker().track(list(frames), np.stack([hands[0], blades[0]]))
    ious = [mask_iou(tracked[t, 1], blades[t]) for t in range(10)]
    assert min(ious) > 0.6, ious
    assert mask_iou(tracked[-1, 0], hands[-1]) > 0.8


def test_tracker_band_narrows_for_thin_masks():
    tracker = FlowTracker(TrackerConfig(band_px=6, band_fraction=0.25))
    thin = np.zeros((H, W), bool)
    thin[10:80, 40:44] = True
    wide = np.zeros((H, W), bool)
    wide[10:80, 20:100] = True
    assert tracker.band_for(thin) == 1 and tracker.band_for(wide) == 6
    assert tracker.core_of(thin, tracker.band_for(thin)).any()


def test_stage_passes_on_a_good_clip(tmp_path):
    clip, hands, objs = _clip(tmp_path)
    out = tmp_path / "o"
    cfg = MasksConfig(hand_box=(50, 30, 76, 58), object_box=(24, 26, 56, 70))
    run_pipeline(out, [(FRAMES, FramesConfig(str(clip))), (MASKS, cfg)])
    q = MasksOutput.load_quality(out / "masks")
    assert q["passed"] and q["track_iou"]["object"] > 0.4 and len(q["per_frame_iou"]) == 10
    assert 0.0 <= q["still_background_dropped"] < 0.01  # a still camera, and a clean object keeps its mask
    obj = MasksOutput.load(out / "masks", num_frames=10, size_wh=(W, H)).obj
    assert mask_iou(obj[5], objs[5]) > 0.7
    assert (out / "masks" / MasksOutput.OVERLAY_FILE).stat().st_size > 0


def test_failed_check_is_one_line_and_leaves_its_overlay_and_quality(tmp_path):
    clip, _, _ = _clip(tmp_path, teleport=True)
    out = tmp_path / "o"
    boxes = ("--hand-box", "50,30,76,58", "--object-box", "24,26,56,70", "--quiet")
    code, _, err = run_cli("masks", str(clip), "--out", str(out), *boxes)
    overlay = out / MasksOutput.FAILED_DIR / MasksOutput.OVERLAY_FILE
    assert code == 1 and len(err.strip().splitlines()) == 1 and "forward-backward" in err and "--masks-dir" in err
    assert str(overlay) in err and overlay.stat().st_size > 0
    assert read_manifest(out / "masks") is None  # nothing the next stage could take for a result
    quality = MasksOutput.load_quality(out / MasksOutput.FAILED_DIR)
    assert quality["passed"] is False and quality["track_iou"]["object"] < 0.4
    # --iou-threshold 0 goes on with the masks as they are, and the stale failure pictures go.
    code, _, _ = run_cli("masks", str(clip), "--out", str(out), *boxes, "--iou-threshold", "0")
    assert code == 0 and (out / "masks" / MasksOutput.OVERLAY_FILE).is_file()
    assert not (out / MasksOutput.FAILED_DIR).exists()


def test_user_masks_dir_is_validated(tmp_path):
    clip, hands, objs = _clip(tmp_path)
    good = tmp_path / "good"
    write_mask_folder(good, hands, objs)
    out = tmp_path / "o"
    run_pipeline(out, [(FRAMES, FramesConfig(str(clip))), (MASKS, MasksConfig(masks_dir=str(good)))])
    assert MasksOutput.load_quality(out / "masks")["source"] == "user"
    bad = tmp_path / "bad"
    write_mask_folder(bad, hands[:5], objs[:5])
    with pytest.raises(UserError, match="5 masks but the clip has 10"):
        run_pipeline(out, [(MASKS, MasksConfig(masks_dir=str(bad)))])
    small = tmp_path / "small"
    write_mask_folder(small, hands[:, ::2, ::2], objs[:, ::2, ::2])
    with pytest.raises(UserError, match="64x48"):
        run_pipeline(out, [(MASKS, MasksConfig(masks_dir=str(small)))])
    (tmp_path / "nohand").mkdir()
    with pytest.raises(UserError, match="no 'hand/' subfolder"):
        read_mask_folder(tmp_path / "nohand")
    corrupt = tmp_path / "corrupt"
    write_mask_folder(corrupt, hands, objs)
    (corrupt / "object" / "000003.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read mask"):
        read_mask_folder(corrupt)


def test_box_options_are_validated(tmp_path):
    with pytest.raises(UserError):
        parse_box("1,2,3", "--hand-box")
    with pytest.raises(UserError):
        MasksConfig(hand_box=(10, 10, 5, 20))
    with pytest.raises(UserError, match="unknown tracker"):
        MasksConfig(tracker="magic")
    clip, _, _ = _clip(tmp_path)
    code, _, err = run_cli("masks", str(clip), "--out", str(tmp_path / "o"), "--detector", "boxes", "--quiet")
    assert code == 2 and "no first-frame" in err


@pytest.mark.parametrize("option,file", [
    (["--tracker", "stcn"], "stcn/stcn.pth"),
    (["--segmenter", "pointrend"], "pointrend/model_final_ba17b9.pkl"),
    (["--detector", "doh100"], "doh100/faster_rcnn_1_8_132028.pth"),
])
def test_missing_weights_backend_is_one_line_exit_2(tmp_path, monkeypatch, option, file):
    clip, _, _ = _clip(tmp_path)
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path / "no_weights"))
    boxes = [] if option[0] == "--detector" else ["--hand-box", "50,30,76,58", "--object-box", "24,26,56,70"]
    code, _, err = run_cli("masks", str(clip), "--out", str(tmp_path / "o"), *boxes, *option, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and file in err and "Traceback" not in err


def test_similarity_from_flow_and_moved_mask_follow_a_known_motion():
    from hoirecon.segment.classic import estimate_similarity, mask_box_xyxy, move_mask

    H, W = 64, 80
    a, s, t = np.deg2rad(10.0), 1.05, np.array([3.0, -2.0])
    A = np.hstack([s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), t[:, None]])  # src -> dst
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    dst = np.stack([xx, yy], -1)
    src = (dst - t) @ np.linalg.inv(A[:, :2]).T
    flow_dst_to_src = (src - dst).astype(np.float32)
    region = np.zeros((H, W), bool)
    region[20:44, 25:55] = True
    est = estimate_similarity(flow_dst_to_src, region)
    np.testing.assert_allclose(est, A, atol=1e-3)
    assert estimate_similarity(flow_dst_to_src, np.zeros((H, W), bool)) is None
    disc = (xx - 40) ** 2 + (yy - 30) ** 2 < 8 ** 2
    moved = move_mask(disc, A)
    cx, cy = A @ np.array([40.0, 30.0, 1.0])
    x0, y0, x1, y1 = mask_box_xyxy(moved)
    assert abs(0.5 * (x0 + x1 - 1) - cx) <= 1.0 and abs(0.5 * (y0 + y1 - 1) - cy) <= 1.0
    assert abs(moved.sum() / disc.sum() - s * s) < 0.1 and moved.dtype == disc.dtype


def _held_object_hidden_by_fingers(T: int = 16, H: int = 96, W: int = 128):
    """A textured "palm" carrying a blue block to the right by 1.5 px/frame while a "finger" bar
    closes over the block (fully hidden in frames 5-9) and opens again. Returns frames and the
    visible hand / object masks (T, H, W)."""
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, (H // 4, W // 4, 3)).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    hand_tex = np.clip(np.array([200, 150, 120]) + rng.integers(-25, 25, (H, W, 3)), 0, 255).astype(np.uint8)
    obj_tex = np.clip(np.array([40, 70, 210]) + rng.integers(-25, 25, (H, W, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:H, :W]
    cover = np.interp(np.arange(T), [0, 1, 5, 9, 13, T - 1], [0, 0, 1, 1, 0, 0])
    frames, hands, objs = [], [], []
    for t in range(T):
        dx = 1.5 * t
        palm = (xx - (40 + dx)) ** 2 + (yy - 48) ** 2 < 18 ** 2
        block = (xx >= 58 + dx) & (xx < 78 + dx) & (yy >= 38) & (yy < 58)
        finger = (xx >= 50 + dx) & (xx < 58 + dx + 22 * cover[t]) & (yy >= 34) & (yy < 62) & (cover[t] > 0)
        hand = palm | finger
        img = bg.copy()
        img[block] = np.roll(obj_tex, int(round(dx)), 1)[block]
        img[hand] = np.roll(hand_tex, int(round(dx)), 1)[hand]
        frames.append(img)
        hands.append(hand)
        objs.append(block & ~hand)
    return frames, np.stack(hands), np.stack(objs)


def test_object_hidden_in_the_hand_comes_back_with_shape_memory():
    frames, hands, objs = _held_object_hidden_by_fingers()
    first = np.stack([hands[0], objs[0]])
    results = {}
    for memory in ((1,), ()):  # the object's remembered shape on / off (the old behaviour)
        fwd_tracker = FlowTracker(TrackerConfig(shape_memory=memory))
        fwd = fwd_tracker.track(frames, first)
        bwd = FlowTracker(TrackerConfig(shape_memory=memory)).track(
            frames[::-1], fwd[-1], first_amodal=fwd_tracker.amodal)[::-1]
        results[memory] = (mask_iou(fwd[-1][1], objs[-1]), mask_iou(bwd[0][1], objs[0]))
    assert min(results[(1,)]) > 0.9, results  # re-emerges forward, and tracks back to frame 0
    assert max(results[()]) < 0.5, results  # without memory the block is lost once hidden


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_tracker_flow_recovers_a_known_shift(method):
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (96, 112, 3), dtype=np.uint8), (5, 5), 1.5)
    src = tex[8:72, 8:96]
    dst = tex[6:70, 5:93]  # content moves by (+3, +2) px from src to dst
    flow = FlowTracker(TrackerConfig(flow_method=method)).flow(src, dst)
    inner = flow[16:48, 16:72].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, 0), [-3.0, -2.0], atol=0.3)  # dst pixel -> where it was in src


def test_tracker_rejects_an_unknown_flow_method():
    with pytest.raises(ValueError, match="flow_method"):
        FlowTracker(TrackerConfig(flow_method="lucas-kanade"))


def _hand_with_a_finger_apart(finger_px: int = 10,
                              finger_rgb=(225, 170, 140)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A skin disc (the part the flow carried) and, 8 px of background away, a ``finger_rgb``
    'finger' of ``finger_px`` x 6 px that just came into view; (image, disc, finger)."""
    rng = np.random.default_rng(2)
    bg = (rng.random((H // 8, W // 8, 3)) * 50 + 60).astype(np.uint8)
    img = np.kron(bg, np.ones((8, 8, 1), np.uint8))
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 40) ** 2 + (yy - 48) ** 2 < 14 ** 2
    finger = (xx >= 62) & (xx < 62 + finger_px) & (yy >= 45) & (yy < 51)
    img[disc] = (225, 170, 140)
    img[finger] = finger_rgb
    noise = rng.normal(0.0, 6.0, img.shape)  # camera noise: colour models with some width
    return np.clip(img + noise, 0, 255).astype(np.uint8), disc, finger


def test_refine_keeps_a_piece_the_landmarks_vouch_for_if_its_colours_are_the_masks():
    from hoirecon.segment.classic import learn_colour_model

    img, disc, finger = _hand_with_a_finger_apart()
    band = np.zeros((H, W), bool)
    band[30:66, 20:80] = True  # the landmarks' band covers the disc and the finger
    skin = learn_colour_model(img, disc)
    tracker = FlowTracker()
    anchor = (np.zeros((H, W), bool), band)
    without = tracker.refine(img, disc, anchor=anchor, fg_model=skin)
    assert not (without & finger).any()  # an island with no sure foreground is dropped
    kept = tracker.refine(img, disc, anchor=anchor, fg_model=skin, support=band)
    assert (kept & finger).sum() > 0.8 * finger.sum() and mask_iou(kept & ~finger, disc) > 0.9
    # a piece of a skin-like colour is kept, unless another mask's colours explain it better ...
    img3, _, _ = _hand_with_a_finger_apart(finger_rgb=(212, 160, 148))
    assert (tracker.refine(img3, disc, anchor=anchor, fg_model=skin, support=band) & finger).any()
    rival = learn_colour_model(img3, finger)
    assert not (tracker.refine(img3, disc, anchor=anchor, fg_model=skin, support=band,
                               rival_models=[rival]) & finger).any()
    # ... nor when it is a speck
    img2, disc2, speck = _hand_with_a_finger_apart(finger_px=2)
    assert not (tracker.refine(img2, disc2, anchor=anchor, fg_model=learn_colour_model(img2, disc2),
                               support=band) & speck).any()


def test_tracker_tells_an_anchor_what_its_mask_is_next_to():
    frames, hands, objs = zip(*[_scene(t) for t in range(3)])
    seen = []

    def anchor(image, warped, near):
        seen.append((warped.copy(), near.copy()))
        return None

    FlowTracker().track(list(frames), np.stack([hands[0], objs[0]]), anchors=[anchor, None])
    assert len(seen) == 2
    warped, near = seen[0]
    assert mask_iou(near, objs[1]) > 0.8 and mask_iou(warped, hands[1]) > 0.8


def test_auto_tracker_keeps_the_candidate_that_comes_back_best(tmp_path, monkeypatch):
    import hoirecon.stages.masks as masks_stage

    clip, hands, objs = _clip(tmp_path)
    # A first-frame split as the learned foreground would give it (the true masks), and a foreground
    # said to see them: the flow tracker then also runs from that split, a third candidate.
    monkeypatch.setattr(masks_stage, "_first_foreground_split", lambda frames, *a: (hands[0], objs[0]))
    monkeypatch.setattr(masks_stage, "_foreground_sees", lambda *a: True)
    out = tmp_path / "o"
    cfg = MasksConfig(hand_box=(50, 30, 76, 58), object_box=(24, 26, 56, 70))
    run_pipeline(out, [(FRAMES, FramesConfig(str(clip))), (MASKS, cfg)])
    q = MasksOutput.load_quality(out / "masks")
    assert set(q["candidates"]) == {"foreground", "flow", "flow_from_split"}
    worse = {name: min(iou.values()) for name, iou in q["candidates"].items()}
    assert q["kept"] == max(worse, key=worse.get) and q["track_iou"] == q["candidates"][q["kept"]]
    assert worse["flow_from_split"] > 0.7  # from the true first frame, flow comes back


def test_grabcut_does_not_depend_on_the_cuts_before_it():
    # GrabCut's colour models start from k-means on OpenCV's global generator: unseeded, the same
    # image gave other models (and masks) after other cuts had run in the process.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), np.uint8)
    init = np.full((64, 64), cv2.GC_PR_BGD, np.uint8)
    init[16:48, 16:48] = cv2.GC_PR_FGD
    init[:4] = cv2.GC_BGD
    models = []
    for state in (1, 2, 99):
        cv2.setRNGSeed(state)  # what earlier cuts left behind
        mask, bgd, fgd = init.copy(), np.zeros((1, 65)), np.zeros((1, 65))
        grabcut(image, mask, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
        models.append(np.concatenate([bgd, fgd], 1))
    assert all(np.array_equal(models[0], m) for m in models[1:])
