"""Procedural objects: watertight, real-world sizes, deterministic, SDF and grasp consistent."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from hoirecon.errors import UserError
from hoirecon.synth import CATEGORIES, load_object_mesh, make_object, make_object_info, object_sdf

SEEDS = (0, 1, 2, 3)

# (axis whose extent is the category's size: 0=x, 2=z, None=largest), range in metres.
SIZE_RANGES = {
    "mug": (2, 0.08, 0.12),
    "bottle": (2, 0.18, 0.28),
    "kettle": (2, 0.15, 0.25),
    "bowl": (0, 0.12, 0.18),
    "knife": (0, 0.18, 0.28),
    "toy_car": (0, 0.08, 0.15),
}

# Genus shows the intended topology: a handle makes a torus (Euler number 0); a shell
# that got tunnels or a handle that broke would change it.
EULER = {"mug": 0, "kettle": 0, "bottle": 2, "bowl": 2, "knife": 2, "toy_car": 2}

_CACHE: dict = {}


def _info(category, seed):
    key = (category, seed)
    if key not in _CACHE:
        _CACHE[key] = make_object_info(category, seed)
    return _CACHE[key]


def test_categories_are_the_papers_six():
    assert CATEGORIES == ("mug", "bottle", "kettle", "bowl", "knife", "toy_car")


@pytest.mark.parametrize("category", CATEGORIES)
def test_watertight_sized_and_centred(category):
    axis, lo, hi = SIZE_RANGES[category]
    for seed in SEEDS:
        mesh = _info(category, seed).mesh
        assert mesh.is_watertight, (category, seed)
        assert mesh.is_winding_consistent and mesh.volume > 0, (category, seed)
        assert mesh.euler_number == EULER[category], (category, seed)
        assert 2000 <= len(mesh.faces) <= 20000, (category, seed, len(mesh.faces))
        size = mesh.extents[axis]
        assert lo <= size <= hi, (category, seed, size)
        assert np.allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-9)
    # Sizes vary with the seed.
    sizes = [_info(category, s).mesh.extents[axis] for s in SEEDS]
    assert np.ptp(sizes) > 0.005


def test_kettle_largest_extent_in_range():
    for seed in SEEDS:
        assert 0.15 <= _info("kettle", seed).mesh.extents.max() <= 0.25


def test_canonical_axes():
    # Containers stand along z; the knife and the car lie along x.
    for seed in SEEDS[:2]:
        for cat in ("bottle",):
            e = _info(cat, seed).mesh.extents
            assert e[2] > 2 * max(e[0], e[1])
        for cat in ("knife", "toy_car"):
            e = _info(cat, seed).mesh.extents
            assert e[0] > 1.5 * max(e[1], e[2])
        mug = _info("mug", seed).mesh
        # The handle sticks out at +x: the mesh reaches further along +x than along -x
        # from the cup's axis (the y extent is the cup's diameter).
        assert mug.extents[0] > mug.extents[1] + 0.01


def test_deterministic_per_seed():
    a = make_object("toy_car", 7)
    b = make_object("toy_car", np.random.default_rng(7))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    c = make_object("toy_car", 8)
    assert c.vertices.shape != a.vertices.shape or not np.allclose(c.vertices, a.vertices)


@pytest.mark.parametrize("category", CATEGORIES)
def test_sdf_matches_mesh_and_grasp_point_is_inside(category):
    info = _info(category, 0)
    mesh = info.mesh
    sdf = object_sdf(category, info.params)
    d = sdf(mesh.vertices)
    assert np.percentile(np.abs(d), 99) < 5e-4  # the mesh is the SDF's zero set
    assert (sdf(mesh.vertices + 0.002 * mesh.vertex_normals) > 0).mean() > 0.99
    assert (sdf(mesh.vertices - 0.001 * mesh.vertex_normals) < 0).mean() > 0.99
    np.testing.assert_allclose(info.sdf(mesh.vertices[:50]), d[:50])
    g = info.grasp
    assert sdf(g.point[None])[0] < 0, g.name
    for v in (g.approach, g.axis):
        assert v.shape == (3,) and abs(np.linalg.norm(v) - 1) < 1e-9
    assert 0.001 < g.width < 0.1
    # A palm coming along the approach direction starts outside the object.
    assert sdf((g.point - 0.08 * g.approach)[None])[0] > 0


def test_unknown_category_lists_known():
    with pytest.raises(UserError, match="mug, bottle, kettle, bowl, knife, toy_car"):
        make_object("spoon", 0)
    assert len(make_object("Toy Car", 0).faces) > 0


def test_load_object_mesh(tmp_path):
    box = trimesh.creation.box((2.0, 1.0, 0.5))
    box.apply_translation((5.0, -3.0, 1.0))
    path = tmp_path / "box.ply"
    box.export(path)
    mesh = load_object_mesh(path, 0.1)
    assert mesh.is_watertight
    assert np.isclose(mesh.extents.max(), 0.1)
    assert np.allclose(mesh.bounds.mean(axis=0), 0.0)

    # A single missing triangle is repaired.
    holed = trimesh.creation.box((1.0, 1.0, 1.0))
    holed.update_faces(np.arange(1, len(holed.faces)))
    assert not holed.is_watertight
    holed.export(tmp_path / "holed.ply")
    assert load_object_mesh(tmp_path / "holed.ply", 0.2).is_watertight

    # An open tube (two 32-sided holes) cannot be closed by the repair.
    tube = trimesh.creation.cylinder(0.5, 1.0, sections=32)
    keep = np.abs(tube.face_normals[:, 2]) < 0.5
    tube.update_faces(keep)
    tube.remove_unreferenced_vertices()
    tube.export(tmp_path / "tube.ply")
    with pytest.raises(UserError, match="not watertight"):
        load_object_mesh(tmp_path / "tube.ply", 0.1)

    with pytest.raises(UserError, match="not found"):
        load_object_mesh(tmp_path / "missing.obj", 0.1)
    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    with pytest.raises(UserError):
        load_object_mesh(tmp_path / "junk.obj", 0.1)
    with pytest.raises(UserError, match="positive"):
        load_object_mesh(path, 0.0)
