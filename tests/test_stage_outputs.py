"""Typed stage artifacts: round trips, the keys on disk, validation, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hoirecon.errors import UserError
from hoirecon.stages.outputs import (ExportOutput, FitOutput, FitPoses, FramesMeta, GroundTruth, HandsOutput,
                                      MasksOutput, PoseOutput)


def _hands(T: int = 3, **overrides) -> HandsOutput:
    rng = np.random.default_rng(0)
    values = dict(K=np.eye(3, dtype=np.float32), T_cam_to_hand=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                  articulation=rng.normal(size=(T, 45)).astype(np.float32),
                  shape=rng.normal(size=10).astype(np.float32), side="left", valid=np.array([True, False, True]),
                  image_size=np.array([64, 48], np.int64), hand_model="anny")
    return HandsOutput(**{**values, **overrides})


def _poses(T: int = 3) -> FitPoses:
    eye = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    return FitPoses(K=np.eye(3, dtype=np.float32), T_cam_to_hand=eye, T_hand_to_obj=eye * 2,
                    articulation=np.ones((T, 45), np.float32), shape=np.zeros(10, np.float32), side="right",
                    image_size=np.array([64, 48], np.int64))


@pytest.mark.parametrize("compressed", [False, True])
def test_hands_round_trip_keeps_values_and_writes_the_documented_keys_in_order(tmp_path, compressed):
    hands = _hands()
    path = hands.save(tmp_path, compressed=compressed)
    assert path == tmp_path / "hands.npz"
    with np.load(path) as z:
        assert z.files == ["K", "T_cam_to_hand", "articulation", "shape", "side", "valid", "image_size", "hand_model"]
        assert str(z["side"]) == "left" and str(z["hand_model"]) == "anny"
    back = HandsOutput.load(tmp_path, num_frames=3)
    for name in ("K", "T_cam_to_hand", "articulation", "shape", "valid", "image_size"):
        np.testing.assert_array_equal(getattr(back, name), getattr(hands, name))
        assert getattr(back, name).dtype == getattr(hands, name).dtype
    assert (back.side, back.hand_model, back.keypoints_2d) == ("left", "anny", None)


def test_hands_written_by_hand_with_the_minimum_keys_load_with_defaults(tmp_path):
    np.savez(tmp_path / "hands.npz", K=np.eye(3), T_cam_to_hand=np.tile(np.eye(4), (2, 1, 1)),
             articulation=np.zeros((2, 45)), shape=np.zeros(10), extra=np.zeros(1))
    hands = HandsOutput.load(tmp_path)
    assert hands.side == "right" and hands.hand_model is None and hands.trusted_frames() is None
    assert hands.num_frames == 2


def test_trusted_frames_are_all_frames_when_none_is_valid():
    assert _hands(valid=np.zeros(3, bool)).trusted_frames().tolist() == [True, True, True]
    assert _hands().trusted_frames().tolist() == [True, False, True]


@pytest.mark.parametrize("overrides, message", [
    (dict(articulation=np.zeros((2, 45), np.float32)), r"'articulation' must have shape \(3, 45\) for 3 frames"),
    (dict(shape=np.zeros(9, np.float32)), r"'shape' must have shape \(10,\)"),
    (dict(valid=np.ones(4, bool)), r"'valid' must have shape \(3,\)"),
    (dict(side="both"), "side must be 'right' or 'left'"),
])
def test_bad_hands_are_refused_on_save_and_on_load(tmp_path, overrides, message):
    bad = _hands(**overrides)
    with pytest.raises(ValueError, match=message):
        bad.save(tmp_path)
    arrays = {k: (np.array(v) if isinstance(v, str) else v) for k, v in vars(bad).items() if v is not None}
    np.savez(tmp_path / "hands.npz", **arrays)
    with pytest.raises(UserError, match=message) as err:
        HandsOutput.load(tmp_path)
    assert str(tmp_path / "hands.npz") in str(err.value) and "\n" not in str(err.value)


def test_hands_load_checks_the_clip_length(tmp_path):
    _hands().save(tmp_path)
    with pytest.raises(UserError, match=r"'T_cam_to_hand' must have shape \(5, 4, 4\) for 5 frames"):
        HandsOutput.load(tmp_path, num_frames=5)


def test_missing_and_unreadable_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="missing .*hands.npz: run the hand stage first"):
        HandsOutput.load(tmp_path)
    with pytest.raises(UserError, match="missing .*poses.npz: run `hoirecon fit` first"):
        FitPoses.load(tmp_path)
    (tmp_path / "poses.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read .*poses.npz"):
        FitPoses.load(tmp_path)


def test_fit_poses_round_trip_and_missing_keys(tmp_path):
    poses = _poses()
    poses.save(tmp_path)
    with np.load(tmp_path / "poses.npz") as z:
        assert z.files == ["K", "T_cam_to_hand", "T_hand_to_obj", "articulation", "shape", "side", "image_size"]
    back = FitPoses.load(tmp_path)
    np.testing.assert_array_equal(back.T_hand_to_obj, poses.T_hand_to_obj)
    assert back.side == "right" and back.image_size.tolist() == [64, 48] and back.num_frames == 3
    with np.load(tmp_path / "poses.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "T_hand_to_obj"}
    np.savez(tmp_path / "poses.npz", **arrays)
    with pytest.raises(UserError, match="lacks T_hand_to_obj; rerun `hoirecon fit`"):
        FitPoses.load(tmp_path)


def test_fit_poses_as_float32_converts_hand_made_float64_files(tmp_path):
    poses = _poses()
    np.savez(tmp_path / "poses.npz", **{k: (v.astype(np.float64) if v.dtype == np.float32 else v)
                                        for k, v in ((k, np.asarray(v)) for k, v in vars(poses).items())})
    back = FitPoses.load(tmp_path)
    assert back.K.dtype == np.float64 and back.as_float32().K.dtype == np.float32


def pose_output(T: int = 3, **overrides) -> PoseOutput:
    """A pose-stage artifact of T frames: identity poses, frame 1 invalid."""
    eye = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    f32 = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    values = dict(K=np.eye(3, dtype=np.float32), image_size=np.array([64, 48], np.int64),
                  valid=np.arange(T) != 1, T_cam_to_hand=eye, articulation=f32(T, 45), shape=f32(10),
                  shape_per_frame=f32(T, 10), side="right", hand_model="anny", keypoints_2d=f32(T, 21, 2),
                  keypoints_cam=f32(T, 21, 3), T_obj_to_cam=eye, T_hand_to_obj=eye, control_points_3d=f32(21, 3),
                  control_points_2d=f32(T, 21, 2), control_conf=f32(T, 21), consistent_hand=np.ones(T, bool),
                  consistent_object=np.zeros(T, bool))
    return PoseOutput(**{**values, **overrides})


def test_pose_output_round_trip_and_one_line_errors(tmp_path):
    poses = pose_output()
    poses.save(tmp_path)
    back = PoseOutput.load(tmp_path, num_frames=3)
    np.testing.assert_array_equal(back.valid, poses.valid)
    np.testing.assert_array_equal(back.T_obj_to_cam, poses.T_obj_to_cam)
    assert (back.side, back.hand_model) == ("right", "anny")
    with pytest.raises(UserError, match="hoirecon pose"):
        PoseOutput.load(tmp_path / "missing")
    with pytest.raises(UserError, match="for 4 frames"):
        PoseOutput.load(tmp_path, num_frames=4)
    with pytest.raises(ValueError, match="control_conf"):
        pose_output(control_conf=np.zeros((3, 20), np.float32)).save(tmp_path)


def _frames(folder, T: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(T):
        FramesMeta.frame_path(folder, t).write_bytes(b"png")


def test_frames_meta_round_trip_writes_the_documented_keys_in_order(tmp_path):
    _frames(tmp_path)
    meta = FramesMeta(fps=12.5, num_frames=3, original_size=(128, 96), size=(64, 48), stride=2, source="/a/clip.mp4",
                      source_digest="0" * 64, source_kind="video")
    path = meta.save(tmp_path)
    assert path == tmp_path / "meta.json"
    on_disk = json.loads(path.read_text())
    assert list(on_disk) == ["fps", "num_frames", "original_size", "size", "stride", "source", "source_digest",
                             "source_kind"]
    assert on_disk["size"] == [64, 48] and on_disk["original_size"] == [128, 96]
    back = FramesMeta.load(tmp_path)
    assert back.to_dict() == on_disk and back.size == (64, 48) and back.source_size == (128, 96)
    assert FramesMeta.frame_paths(tmp_path) == [tmp_path / f"{t:06d}.png" for t in range(3)]


def test_frames_meta_with_the_minimum_keys_loads_and_falls_back_to_the_working_size(tmp_path):
    _frames(tmp_path, 2)
    (tmp_path / "meta.json").write_text(json.dumps({"fps": 10, "num_frames": 2, "size": [32, 24]}))
    meta = FramesMeta.load(tmp_path)
    assert (meta.num_frames, meta.width, meta.height, meta.source_size, meta.stride) == (2, 32, 24, (32, 24), None)


@pytest.mark.parametrize("values, message", [
    ({"fps": 10, "num_frames": 3, "size": [0, 24]}, "positive"),
    ({"fps": 10, "num_frames": 3, "size": [32, 24], "original_size": [-1, 24]}, "original_size"),
    ({"fps": 10, "num_frames": 4, "size": [32, 24]}, "holds 3 frame PNGs"),
    ({"fps": 10, "size": [32, 24]}, "lacks num_frames"),
    ([1, 2], "JSON object"),
])
def test_bad_frames_meta_is_a_one_line_user_error(tmp_path, values, message):
    _frames(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps(values))
    with pytest.raises(UserError, match=message) as err:
        FramesMeta.load(tmp_path)
    assert "meta.json" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="missing .*meta.json"):
        FramesMeta.load(tmp_path / "nowhere")


def test_frames_meta_save_checks_the_pngs(tmp_path):
    _frames(tmp_path, 2)
    with pytest.raises(ValueError, match="holds 2 frame PNGs"):
        FramesMeta(fps=10.0, num_frames=3, size=(32, 24)).save(tmp_path)


def _masks(T: int = 3, H: int = 8, W: int = 10) -> MasksOutput:
    hand = np.zeros((T, H, W), bool)
    obj = np.zeros((T, H, W), bool)
    hand[:, 1:3, 1:4] = True
    obj[:, 4:7, 5:9] = True
    return MasksOutput(hand=hand, obj=obj, quality={"source": "user", "passed": True, "track_iou": None,
                                                    "per_frame_iou": None}, boxes={})


def test_masks_round_trip_writes_the_documented_files(tmp_path):
    masks = _masks()
    masks.save(tmp_path, disjoint=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json", "hand", "object", "quality.json"]
    assert sorted(p.name for p in (tmp_path / "object").iterdir()) == [f"{t:06d}.png" for t in range(3)]
    assert json.loads((tmp_path / "quality.json").read_text()) == masks.quality
    assert (tmp_path / "quality.json").read_text() == json.dumps(masks.quality, indent=2)
    _frames(tmp_path / "frames")
    meta = FramesMeta(fps=10.0, num_frames=3, size=(10, 8))
    back = MasksOutput.load(tmp_path, meta)
    np.testing.assert_array_equal(back.hand, masks.hand)
    np.testing.assert_array_equal(back.obj, masks.obj)
    assert (back.quality, back.boxes, back.size, back.num_frames) == (masks.quality, {}, (10, 8), 3)
    assert MasksOutput.load_quality(tmp_path / "frames") is None


def test_masks_without_json_load_with_none(tmp_path):
    MasksOutput(hand=_masks().hand, obj=_masks().obj).save(tmp_path)
    assert not (tmp_path / "quality.json").exists() and not (tmp_path / "boxes.json").exists()
    back = MasksOutput.load(tmp_path)
    assert back.quality is None and back.boxes is None


def test_masks_validation(tmp_path):
    masks = _masks()
    with pytest.raises(ValueError, match="bool"):
        MasksOutput(hand=masks.hand.astype(np.uint8), obj=masks.obj).validate()
    with pytest.raises(ValueError, match="differ in shape"):
        MasksOutput(hand=masks.hand, obj=masks.obj[:2]).validate()
    with pytest.raises(ValueError, match="for 4 frames of 10x8"):
        masks.validate(FramesMeta(fps=10.0, num_frames=4, size=(10, 8)))
    overlapping = MasksOutput(hand=masks.hand, obj=masks.hand.copy())
    overlapping.validate()  # the user's masks may overlap
    assert overlapping.overlap_frames().tolist() == [True, True, True]
    with pytest.raises(ValueError, match="overlap in 3 frames"):
        overlapping.save(tmp_path, disjoint=True)
    assert not (tmp_path / "hand").exists()


def test_masks_load_is_a_one_line_user_error(tmp_path):
    _masks().save(tmp_path)
    with pytest.raises(UserError, match="has 3 masks but the clip has 4 frames"):
        MasksOutput.load(tmp_path, FramesMeta(fps=10.0, num_frames=4, size=(10, 8)))
    with pytest.raises(UserError, match="no 'hand/' subfolder"):
        MasksOutput.load(tmp_path / "nowhere")
    (tmp_path / "quality.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*quality.json"):
        MasksOutput.load(tmp_path)


def test_ground_truth_round_trip_keeps_the_key_order_and_strings(tmp_path):
    T = 2
    gt = GroundTruth(K=np.eye(3, dtype=np.float32), T_cam_to_hand=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                     T_hand_to_obj=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                     articulation=np.zeros((T, 45), np.float32), shape=np.zeros(10, np.float32),
                     image_size=np.array([64, 48], np.int64), side="left", category="mug",
                     penetration_mm=np.float32(1.5))
    path = gt.save(tmp_path)
    assert path == tmp_path / "gt.npz" and GroundTruth.file(tmp_path.parent / "x") == tmp_path.parent / "x/gt/gt.npz"
    with np.load(path) as z:
        assert z.files == ["K", "image_size", "T_cam_to_hand", "T_hand_to_obj", "articulation", "shape", "side",
                           "category", "penetration_mm"]
    back = GroundTruth.load(tmp_path)
    assert (back.side, back.category, back.hand_model, back.num_frames) == ("left", "mug", None, 2)
    np.testing.assert_array_equal(back.T_hand_to_obj, gt.T_hand_to_obj)


def test_ground_truth_missing_keys_are_one_line_user_errors(tmp_path):
    np.savez(tmp_path / "gt.npz", K=np.eye(3))
    with pytest.raises(UserError, match="ground truth .*gt.npz lacks T_cam_to_hand, T_hand_to_obj"):
        GroundTruth.load(tmp_path)
    assert GroundTruth.load(tmp_path, required=("K",)).T_cam_to_hand is None
    with pytest.raises(UserError, match="missing"):
        GroundTruth.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="lacks shape"):
        GroundTruth(K=np.eye(3), T_cam_to_hand=np.eye(4)[None], T_hand_to_obj=np.eye(4)[None],
                    articulation=np.zeros((1, 45)), shape=None).save(tmp_path)


def _export(T: int = 3) -> ExportOutput:
    eye = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    return ExportOutput(K=np.eye(3, dtype=np.float32), image_size=np.array([64, 48], np.int64), fps=12.5, side="right",
                        shape=np.zeros(10, np.float32), T_cam_to_hand=eye, T_hand_to_obj=eye, T_cam_to_obj=eye,
                        articulation=np.zeros((T, 45), np.float32), T_obj_to_world=np.eye(4, dtype=np.float32),
                        world="object", exported_frames=np.array([0, 2], np.int64))


def test_export_poses_round_trip_npz_and_json(tmp_path):
    npz, js = _export().save(tmp_path)
    assert (npz.name, js.name) == ("poses.npz", "poses.json")
    with np.load(npz) as z:
        assert z.files == ["K", "image_size", "fps", "side", "shape", "T_cam_to_hand", "T_hand_to_obj", "T_cam_to_obj",
                           "articulation", "T_obj_to_world", "world", "exported_frames"]
        assert z["fps"].dtype == np.float32 and str(z["world"]) == "object"
    doc = json.loads(js.read_text())
    assert list(doc) == ["conventions", "world", "fps", "image_size", "K", "side", "shape", "T_obj_to_world",
                         "exported_frames", "frames"]
    assert doc["fps"] == 12.5 and doc["exported_frames"] == [0, 2] and len(doc["frames"]) == 3
    assert doc["frames"][2]["time"] == 2 / 12.5
    back = ExportOutput.load(tmp_path)
    assert (back.num_frames, back.side, back.world, back.fps) == (3, "right", "object", 12.5)
    assert ExportOutput.object_file("obj", camera=True) == "object_camera.obj"
    assert ExportOutput.hand_file(7, "ply") == "hands/000007.ply"


def test_bad_export_poses_are_refused(tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match="exported_frames"):
        dataclasses.replace(_export(), exported_frames=np.array([5])).save(tmp_path)
    with pytest.raises(UserError, match="run `hoirecon export` first"):
        ExportOutput.load(tmp_path)


def test_fit_output_init_and_summary_round_trip(tmp_path):
    T_start = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    T_start[:, 0, 3] = [0.01, 0.02, 0.03]
    FitOutput.save_init(tmp_path, T_start, [0.0, 0.1, 0.2], 0.05)
    np.testing.assert_array_equal(FitOutput.initial_T_hand_to_obj(tmp_path), T_start)
    FitOutput.save_summary(tmp_path, {"steps": 5, "mask_iou": [{"iou_object": 0.5}]})
    assert FitOutput.summary(tmp_path)["steps"] == 5
    with pytest.raises(UserError, match="hoirecon fit"):
        FitOutput.summary(tmp_path / "missing")
    (tmp_path / FitOutput.SUMMARY).write_text("{not json")
    with pytest.raises(UserError, match="cannot read the fit summary"):
        FitOutput.summary(tmp_path)


def test_every_stage_declares_its_typed_outputs():
    import inspect

    from hoirecon.stages import outputs
    from hoirecon.stages.registry import STAGES

    for name, stage in STAGES.items():
        assert stage.outputs, f"stage {name} declares no outputs"
        for cls_name in stage.outputs:
            assert inspect.isclass(getattr(outputs, cls_name, None)), f"{name}: no class {cls_name} in stages.outputs"
