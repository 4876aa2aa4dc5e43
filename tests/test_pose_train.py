"""Training the pose network on a synthetic clip, predicting a clip, the weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.errors import UserError
from hoirecon.pose.data import concat_samples, load_clip, load_template, make_samples
from hoirecon.pose.network import HandObjectPoseNet, PoseNetConfig
from hoirecon.pose.predict import predict_clip
from hoirecon.pose.train import TrainConfig, load_pose_net, save_pose_weights, train_pose_net

TINY = PoseNetConfig(name="tiny", image_size=64, resnet_block="basic", resnet_layers=(1, 1, 1), resnet_stages=3,
                     fpn_channels=16, roi_size=8, cr_channels=8, hourglass_depth=2, hand_channels=32, hand_fc=(32, 32),
                     object_channels=16)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from hoirecon.synth.generator import generate_clip

    out = tmp_path_factory.mktemp("pose") / "mug"
    generate_clip("mug", out, frames=4, size=96, seed=3)
    return out


def test_samples_from_synth_clip(clip_dir):
    clip = load_clip(clip_dir)
    assert clip.images.shape == (4, 96, 96, 3) and clip.valid.all() and clip.control_3d.shape == (21, 3)
    s = make_samples(clip, 64)
    assert s.images.shape == (4, 64, 64, 3) and s.joints_2d.shape == (4, 21, 2)
    # The object's control-point centre projects inside its box (labels and crops agree).
    c = s.control_2d[:, 20]
    assert ((c > s.object_boxes[:, :2]) & (c < s.object_boxes[:, 2:])).all()
    both = concat_samples([s, make_samples(clip, 64, np.random.default_rng(0), jitter=0.1)])
    assert len(both) == 8 and both.clip_names == [clip.name, clip.name] and set(both.clip) == {0, 1}


def test_train_predict_and_weights_round_trip(clip_dir, tmp_path):
    from hoirecon.hand import build_hand_model

    torch.manual_seed(0)
    clip = load_clip(clip_dir)
    samples = make_samples(clip, TINY.image_size)
    net = HandObjectPoseNet(TINY)
    res = train_pose_net(net, samples, TrainConfig(steps=12, batch_size=4, lr=3e-3, colour_jitter=0.0))
    assert res["steps"] == 12 and res["log"][-1]["total"] < res["log"][0]["total"]
    path = save_pose_weights(net, tmp_path / "w.pt", {"note": "test"})
    net2, recipe = load_pose_net(path)
    assert recipe == {"note": "test"}
    poses = predict_clip(net2, clip, build_hand_model("anny"))
    assert poses.joints_2d.shape == (4, 21, 2) and poses.T_obj_to_cam.shape == (4, 4, 4)
    assert np.isfinite(poses.keypoints_cam[poses.valid]).all()


def test_bad_weights_and_templates(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(UserError, match="not a hoirecon pose weights file"):
        load_pose_net(bad)
    import trimesh

    box = trimesh.creation.box((0.1, 0.05, 0.05))
    box.export(tmp_path / "box.ply")
    assert load_template(tmp_path / "box.ply").is_watertight
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-2])
    open_box.export(tmp_path / "open.ply")
    with pytest.raises(UserError, match="not watertight"):
        load_template(tmp_path / "open.ply")
    with pytest.raises(UserError, match="not found"):
        load_template(tmp_path / "missing.ply")


def test_recipe_supervised_then_semi(clip_dir, tmp_path):
    """`hoirecon pose train --unlabeled`: both phases run; the pseudo-label counts are recorded."""
    from hoirecon.pose.recipe import RecipeConfig, train_recipe

    cfg = RecipeConfig(sup=TrainConfig(steps=2, batch_size=2), semi=TrainConfig(steps=2, batch_size=2))
    summary = train_recipe(clip_dir.parent, tmp_path / "w.pt", cfg, unlabeled=clip_dir.parent)
    assert summary["supervised"]["steps"] == 2 and summary["semi_supervised"]["steps"] == 2
    assert summary["pseudo_labels"]["frames"] == 4 and summary["pseudo_labels"]["clips"] == 1
    _, recipe = load_pose_net(tmp_path / "w.pt")
    assert recipe["name"] == "cpu-semi"
