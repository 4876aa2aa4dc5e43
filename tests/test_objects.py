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
    mesh = load_object_mesh(path, 0.1).mesh
    assert mesh.is_watertight
    assert np.isclose(mesh.extents.max(), 0.1)
    assert np.allclose(mesh.bounds.mean(axis=0), 0.0)

    # A single missing triangle is repaired.
    holed = trimesh.creation.box((1.0, 1.0, 1.0))
    holed.update_faces(np.arange(1, len(holed.faces)))
    assert not holed.is_watertight
    holed.export(tmp_path / "holed.ply")
    holed_loaded = load_object_mesh(tmp_path / "holed.ply", 0.2)
    assert holed_loaded.mesh.is_watertight and any("filled holes" in n for n in holed_loaded.notes)

    # An open tube (two 32-sided holes, as where a scanned handle meets its body) is closed by fans.
    tube = trimesh.creation.cylinder(0.5, 1.0, sections=32)
    keep = np.abs(tube.face_normals[:, 2]) < 0.5
    tube.update_faces(keep)
    tube.remove_unreferenced_vertices()
    tube.export(tmp_path / "tube.ply")
    closed = load_object_mesh(tmp_path / "tube.ply", 0.1)
    assert closed.mesh.is_watertight and closed.mesh.volume > 0 and any("2 larger holes" in n for n in closed.notes)
    # Its volume is the full cylinder's (the fans close the ends flat).
    full = trimesh.creation.cylinder(0.5, 1.0, sections=32)
    assert closed.mesh.volume == pytest.approx(full.volume * 0.1**3, rel=1e-6)

    # A fin (a triangle hanging off an edge: three faces on one edge) stays open: refused.
    fin = trimesh.creation.box((1.0, 1.0, 1.0))
    a, b = fin.edges_unique[0]
    tip = len(fin.vertices)
    fin = trimesh.Trimesh(np.vstack([fin.vertices, [[3.0, 3.0, 3.0]]]), np.vstack([fin.faces, [[a, b, tip]]]),
                          process=False)
    fin.export(tmp_path / "fin.ply")
    with pytest.raises(UserError, match="not watertight and could not be repaired") as err:
        load_object_mesh(tmp_path / "fin.ply", 0.1)
    assert "open edges" in str(err.value) and "\n" not in str(err.value)

    with pytest.raises(UserError, match="not found"):
        load_object_mesh(tmp_path / "missing.obj", 0.1)
    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    with pytest.raises(UserError):
        load_object_mesh(tmp_path / "junk.obj", 0.1)
    with pytest.raises(UserError, match="positive"):
        load_object_mesh(path, 0.0)


def _write_seam_split_obj(mesh: trimesh.Trimesh, path) -> None:
    """Write ``mesh`` as a scanner does: every face corner its own vertex with its own texture
    coordinate and normal, so the file's surface is split along every edge (all seams)."""
    lines = []
    for i, tri in enumerate(np.asarray(mesh.triangles)):
        for j, v in enumerate(tri):
            lines.append(f"v {v[0]:.9f} {v[1]:.9f} {v[2]:.9f}")
            lines.append(f"vt {(i % 97) / 97 + j / 300:.6f} {(i // 97) / 97:.6f}")
            n = mesh.face_normals[i]
            lines.append(f"vn {n[0]:.6f} {n[1]:.6f} {n[2]:.6f}")
        k = 3 * i
        lines.append(f"f {k + 1}/{k + 1}/{k + 1} {k + 2}/{k + 2}/{k + 2} {k + 3}/{k + 3}/{k + 3}")
    path.write_text("\n".join(lines) + "\n")


def test_seam_split_scan_is_merged_and_keeps_its_metric_size(tmp_path):
    """A 12 cm mug-sized cylinder in metres, written with split texture/normal seams (as YCB's scans)."""
    scan = trimesh.creation.cylinder(radius=0.04, height=0.12, sections=24)
    path = tmp_path / "textured_simple.obj"
    _write_seam_split_obj(scan, path)
    # The split file is open as trimesh reads it by default: the defect being fixed.
    assert not trimesh.load(str(path), force="mesh").is_watertight
    loaded = load_object_mesh(path)
    assert loaded.mesh.is_watertight and loaded.mesh.volume > 0
    assert any("merged" in n and "seams" in n for n in loaded.notes)
    # Its own size is kept (a hand-held size in metres), and the notes say so.
    assert loaded.scale == 1.0 and np.isclose(loaded.mesh.extents.max(), 0.12)
    assert any("kept the file's scale" in n for n in loaded.notes)
    assert loaded.mesh.volume == pytest.approx(scan.volume, rel=1e-6)


def test_mesh_scale_rule(tmp_path):
    """Hand-held sizes in metres are kept; other units are rescaled to 15 cm, and said so."""
    for extent, expect in ((0.24, 0.24), (0.035, 0.035), (2.0, 0.15), (120.0, 0.15), (0.001, 0.15)):
        path = tmp_path / f"box{extent}.ply"
        trimesh.creation.box((extent, extent / 2, extent / 3)).export(path)
        loaded = load_object_mesh(path)
        assert np.isclose(loaded.mesh.extents.max(), expect), extent
        assert any(("rescaled" in n) == (expect != extent) for n in loaded.notes), (extent, loaded.notes)
    loaded = load_object_mesh(tmp_path / "box0.24.ply", 0.1)
    assert np.isclose(loaded.mesh.extents.max(), 0.1) and any("--object-size" in n for n in loaded.notes)


# ----------------------------------------------------------------------------- the prior's wide shapes


@pytest.mark.parametrize("category", CATEGORIES)
def test_wide_shapes_are_watertight_with_a_consistent_sdf_and_grasp(category):
    for seed in range(3):
        info = make_object_info(category, np.random.default_rng([11, seed]), wide=True)
        mesh = info.mesh
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, (category, seed)
        assert np.allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-9)
        d = info.sdf(mesh.vertices)
        assert np.percentile(np.abs(d), 99) < 5e-4, (category, seed)
        assert info.sdf(info.grasp.point[None])[0] < 0, (category, seed)
        assert info.sdf((info.grasp.point - 0.08 * info.grasp.approach)[None])[0] > 0, (category, seed)


def test_wide_sampler_widens_the_ranges_and_adds_the_variants():
    from hoirecon.synth.objects import sample_object_params

    narrow = [sample_object_params("mug", s)["handle_ring"] for s in range(200)]
    wide = [sample_object_params("mug", s, wide=True) for s in range(200)]
    rings = [p["handle_ring"] for p in wide]
    assert min(rings) < min(narrow) - 0.001 and max(rings) > max(narrow) + 0.001
    assert min(min(rings), *(p["handle_tube"] for p in wide)) > 0
    for key in ("body_aspect", "lid_h", "spout_reach"):
        assert 10 < sum(key in p for p in wide) < 190, key
    bottles = [sample_object_params("bottle", s, wide=True) for s in range(100)]
    assert 10 < sum(p.get("box_body", False) for p in bottles) < 90
    # the synth benchmark's draws never see them, and its objects stay what they were
    assert not any(k in sample_object_params("mug", s) for s in range(50) for k in ("body_aspect", "lid_h"))


def test_variant_keys_at_their_neutral_values_give_the_plain_object():
    from hoirecon.synth.objects import sample_object_params

    pts = np.random.default_rng(0).uniform(-0.15, 0.15, (2000, 3))
    variants = {"mug": {"lid_h": 0.0, "spout_reach": 0.0}, "bottle": {"box_body": False}, "kettle": {}, "bowl": {}}
    for category, neutral_values in variants.items():
        params = sample_object_params(category, 4)
        neutral = dict(params, body_aspect=1.0, **neutral_values)
        np.testing.assert_array_equal(object_sdf(category, params)(pts), object_sdf(category, neutral)(pts))
