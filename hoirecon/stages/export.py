"""Stage `export`: meshes, per-frame poses, an animated glTF and pictures of the fitted clip.

Reads ``<out>/fit/`` (``poses.npz``, ``object.ply``, ``scene.pt`` when ``--resolution`` is
given, ``summary.json`` if present, the fit's manifest for the hand model), the frames, the
masks, and ``<out>/eval.json`` if present (metrics on the summary page; it is not a
tracked input, so rerun with ``--force export`` after a new evaluation).

Frames: the object mesh is in the object frame. Everything else that puts the clip
together (per-frame hand meshes, the glb) is in the *world* frame chosen by ``world``:
``object`` (default; world = object frame, the object stands still and the hand and camera
move) or ``camera`` (the same static world moved to the first frame's camera frame, OpenCV
axes: ``T_obj_to_world = inv(T_cam_to_obj^0)``). Metres everywhere.

Artifacts in ``<out>/export/``:

- ``object.<fmt>``: object mesh (marching cubes of the fitted SDF at ``resolution`` or the
  fit's ``object.ply``; the parts the object masks see; object frame). With ``world=camera``
  also ``object_camera.<fmt>`` (the same mesh in the first camera frame).
- ``format=obj|ply``: ``hands/NNNNNN.<fmt>``: the hand mesh of each exported frame (clip
  frame number), in the world frame.
- ``format=glb``: ``interaction.glb``: object + hand animated over the clip (hand poses as
  node transforms, articulation as one morph target per exported frame, the input camera;
  ``hoirecon.export.gltf``). Per-frame hand meshes live in it as morph targets.
- ``poses.npz``: ``K`` (3,3), ``image_size`` (W,H), ``fps``, ``side``, ``shape`` (10,),
  ``T_cam_to_hand``, ``T_hand_to_obj``, ``T_cam_to_obj`` (T,4,4), ``articulation`` (T,45) for
  every clip frame, ``T_obj_to_world`` (4,4), ``world``, ``exported_frames`` (N,) indices.
  ``poses.json``: the same values (nested lists) with a note on the conventions.
- ``turntable.mp4`` (hand + object at ``turntable_frame``, ``turntable_views`` views),
  ``side_by_side.mp4`` (input | reconstruction over the input | fixed novel view, one
  video frame per exported frame), ``summary.png`` (contact sheet + metrics). Skipped with
  ``pictures=False``.
- ``view.html`` (``format=glb``): the animated glb in an offline three.js viewer with the clip's
  metrics and pictures (``hoirecon.export.viewer``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from hoirecon.errors import UserError
from hoirecon.export.gltf import OPENCV_TO_GLTF_CAMERA, write_animated_glb
from hoirecon.export.meshes import (
    hand_meshes_hand_frame,
    object_mesh_from_fit,
    write_mesh,
)
from hoirecon.export.viewer import write_clip_view
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.io.masks import overlay_masks
from hoirecon.io.video import read_rgb, write_png, write_video
from hoirecon.pipeline.runner import StageContext, read_manifest
from hoirecon.stages.configs import ExportConfig
from hoirecon.stages.outputs import EvalOutput, ExportOutput, FitOutput, FitPoses, FramesMeta, MasksOutput
from hoirecon.stages.registry import STAGES

TURNTABLE_FPS = 12.0
SUMMARY_MIN_TILE = 192  # px: tiles of small clips are enlarged on the summary page
RENDER_CHUNK = 12  # exported frames rendered at a time for the side-by-side video


def select_frames(num_frames: int, count: Optional[int]) -> np.ndarray:
    """(N,) int64 clip frame indices: all, or ``count`` evenly spaced (first and last included)."""
    if count is None or count >= num_frames:
        return np.arange(num_frames)
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))


def _eval_lines(out_root: Path, fit_dir: Path) -> list[str]:
    """Text lines with the fit's mask IoUs and the metrics of ``<out>/eval.json`` (numbers only)."""
    lines = []
    try:
        fit = FitOutput.summary(fit_dir)
        iou_o, iou_h, mesh_o = (float(fit.get(k, float("nan")))
                                for k in ("mean_iou_object", "mean_iou_hand", "mesh_iou_object"))
        lines.append(f"fit: preset {fit.get('preset', '?')}, {fit.get('steps', '?')} steps, "
                     f"mask IoU object {iou_o:.3f} (mesh {mesh_o:.3f}), hand {iou_h:.3f}")
    except (UserError, TypeError):
        pass
    data = EvalOutput.load(out_root)
    if data is None:
        return lines
    flat = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            flat.append(f"{prefix} {value:.4g}")
        elif isinstance(value, dict) and prefix.count(".") < 1:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    if isinstance(data, dict):
        for k, v in data.items():
            walk(str(k), v)
    for i in range(0, min(len(flat), 16), 4):
        lines.append(("eval: " if i == 0 else "      ") + ",  ".join(flat[i:i + 4]))
    return lines


def _resize(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == tuple(size_wh):
        return image
    return cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class _Clip:
    """The fitted clip, put together for export (torch tensors on the export's device, float32).

    frames: (N,) exported clip frame indices; fps; image_size (W, H) of the working frames.
    object_verts (V, 3) float32 / object_faces (F, 3) int64: object frame. hand_local: (T, Vh, 3)
    hand meshes in the hand frame, hand_faces (Fh, 3). Poses (T, 4, 4) for every clip frame,
    ``T_obj_to_world`` (4, 4): the world frame chosen by ``ExportConfig.world``.
    """

    poses: FitPoses
    frames: np.ndarray
    fps: float
    image_size: tuple[int, int]
    mesh: object  # trimesh.Trimesh of the object (extents, watertightness for the pictures)
    mesh_source: str
    masks: Optional[MasksOutput]  # loaded where a step needs them (--resolution, the pictures)
    object_verts: np.ndarray
    object_faces: np.ndarray
    hand_local: torch.Tensor
    hand_faces: torch.Tensor
    T_hand_to_obj: torch.Tensor
    T_cam_to_obj: torch.Tensor
    T_obj_to_world: torch.Tensor
    T_hand_to_world: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.poses.num_frames


def _load_clip(fit_dir: Path, masks_dir: Path, meta: FramesMeta, cfg: ExportConfig, device: torch.device) -> _Clip:
    """The fit's poses, object mesh and hand meshes, in the frames ``cfg.world`` asks for."""
    from hoirecon.hand import build_hand_model

    poses = FitPoses.load(fit_dir).as_float32()
    T = poses.num_frames
    if meta.num_frames != T:
        raise UserError(f"the fit has {T} frames but the frames stage has {meta.num_frames}; rerun `hoirecon fit`")
    fit_manifest = read_manifest(fit_dir) or {}
    hand_model = build_hand_model(str(fit_manifest.get("config", {}).get("hand_model", "anny")), device)
    f32 = dict(dtype=torch.float32, device=device)
    T_cam_to_hand = torch.as_tensor(poses.T_cam_to_hand, **f32)
    T_hand_to_obj = torch.as_tensor(poses.T_hand_to_obj, **f32)
    T_cam_to_obj = T_hand_to_obj @ T_cam_to_hand
    masks = MasksOutput.load(masks_dir, meta) if cfg.resolution is not None or cfg.pictures else None
    mesh, mesh_source = object_mesh_from_fit(fit_dir, cfg.resolution, device, T_cam_to_obj,
                                             None if masks is None else masks.obj, torch.as_tensor(poses.K, **f32),
                                             None if masks is None else masks.hand)
    hand_local, hand_faces = hand_meshes_hand_frame(hand_model, torch.as_tensor(poses.articulation, **f32),
                                                    torch.as_tensor(poses.shape, **f32), poses.side)
    T_obj_to_world = (invert_rigid(T_cam_to_obj[0]) if cfg.world == "camera" else torch.eye(4, **f32))
    W, H = (int(v) for v in poses.image_size)
    return _Clip(poses=poses, frames=select_frames(T, cfg.frames), fps=float(meta.fps or 30.0),
                 image_size=(W, H), mesh=mesh, mesh_source=mesh_source, masks=masks,
                 object_verts=np.asarray(mesh.vertices, np.float32), object_faces=np.asarray(mesh.faces, np.int64),
                 hand_local=hand_local, hand_faces=hand_faces, T_hand_to_obj=T_hand_to_obj, T_cam_to_obj=T_cam_to_obj,
                 T_obj_to_world=T_obj_to_world, T_hand_to_world=T_obj_to_world @ T_hand_to_obj)


def _turntable_frame(clip: _Clip, cfg: ExportConfig) -> int:
    """The clip frame the turntable shows; UserError past the clip's end."""
    sel = clip.frames
    frame = int(sel[len(sel) // 2]) if cfg.turntable_frame is None else int(cfg.turntable_frame)
    if frame >= clip.num_frames:
        raise UserError(f"--turntable-frame {frame} is past the clip's last frame ({clip.num_frames - 1})")
    return frame


def _write_meshes(clip: _Clip, cfg: ExportConfig, out: Path, final: Path) -> tuple[dict[str, str], Optional[dict]]:
    """``object.<fmt>`` (and ``object_camera.<fmt>``), then ``interaction.glb`` (glb) or
    ``hands/NNNNNN.<fmt>``. Returns ({output name: final path}, the glb's stats or None)."""
    fmt, outputs = cfg.format, {}
    write_mesh(out / ExportOutput.object_file(fmt), clip.object_verts, clip.object_faces)
    outputs["object_mesh"] = str(final / ExportOutput.object_file(fmt))
    if cfg.world == "camera":
        obj_cam = transform_points(clip.T_obj_to_world, torch.as_tensor(clip.object_verts, dtype=torch.float32,
                                                                         device=clip.T_obj_to_world.device))
        write_mesh(out / ExportOutput.object_file(fmt, camera=True), obj_cam.cpu().numpy(), clip.object_faces)
        outputs["object_mesh_camera"] = str(final / ExportOutput.object_file(fmt, camera=True))
    if fmt == "glb":
        glb = _write_glb(clip, cfg, out / ExportOutput.GLB)
        outputs["glb"] = str(final / ExportOutput.GLB)
        return outputs, glb
    sel, faces_np = clip.frames, clip.hand_faces.cpu().numpy()
    (out / ExportOutput.HANDS_DIR).mkdir()
    hand_world = transform_points(clip.T_hand_to_world[sel], clip.hand_local[sel]).cpu().numpy()
    for i, t in enumerate(sel):
        write_mesh(out / ExportOutput.hand_file(t, fmt), hand_world[i], faces_np)
    outputs["hand_meshes"] = str(final / ExportOutput.HANDS_DIR)
    return outputs, None


def _write_glb(clip: _Clip, cfg: ExportConfig, path: Path) -> dict:
    """The animated ``interaction.glb`` of the exported frames (``hoirecon.export.gltf``)."""
    sel = clip.frames
    T_cam_to_world = (clip.T_obj_to_world @ clip.T_cam_to_obj)[sel].cpu().numpy() if cfg.camera else None
    display = np.eye(4, dtype=np.float32)
    # Viewers are Y-up looking down -Z: show the world as the first camera saw it.
    R_world_to_cam0 = invert_rigid(clip.T_obj_to_world @ clip.T_cam_to_obj[0])[:3, :3].cpu().numpy()
    display[:3, :3] = OPENCV_TO_GLTF_CAMERA @ R_world_to_cam0
    return write_animated_glb(
        path, clip.object_verts, clip.object_faces, clip.hand_local[sel].cpu().numpy(), clip.hand_faces.cpu().numpy(),
        T_hand_to_world=clip.T_hand_to_world[sel].cpu().numpy(), T_obj_to_world=clip.T_obj_to_world.cpu().numpy(),
        times=sel / clip.fps, T_world_to_display=display, T_cam_to_world=T_cam_to_world, K=clip.poses.K,
        image_size=clip.image_size,
        frame_names=[f"frame_{t:06d}" for t in sel], interpolation=cfg.interpolation)


def _write_poses(clip: _Clip, cfg: ExportConfig, out: Path, final: Path) -> dict[str, str]:
    """``poses.npz`` and ``poses.json``: every clip frame's poses, the world frame and the exported frames."""
    poses = clip.poses
    ExportOutput(K=poses.K, image_size=poses.image_size, fps=clip.fps, side=poses.side, shape=poses.shape,
                 T_cam_to_hand=poses.T_cam_to_hand, T_hand_to_obj=poses.T_hand_to_obj,
                 T_cam_to_obj=clip.T_cam_to_obj.cpu().numpy().astype(np.float32), articulation=poses.articulation,
                 T_obj_to_world=clip.T_obj_to_world.cpu().numpy().astype(np.float32), world=cfg.world,
                 exported_frames=clip.frames.astype(np.int64)).save(out)
    return {"poses": str(final / ExportOutput.POSES_JSON)}


def _write_pictures(ctx: StageContext, cfg: ExportConfig, clip: _Clip, tt_frame: int, out: Path,
                    final: Path) -> dict[str, str]:
    """``turntable.mp4``, ``side_by_side.mp4`` and ``summary.png``; returns their final paths."""
    from hoirecon.export.views import ClipGeometry, scaled_size, turntable
    from hoirecon.io.threads import torch_threads

    sel, (W, H) = clip.frames, clip.image_size
    device = clip.T_cam_to_obj.device
    f32 = dict(dtype=torch.float32, device=device)
    hand_obj = transform_points(clip.T_hand_to_obj, clip.hand_local)  # (T, V, 3) object frame
    geom = ClipGeometry(torch.as_tensor(clip.object_verts, **f32), torch.as_tensor(clip.object_faces, device=device),
                        hand_obj[sel], clip.hand_faces, clip.T_cam_to_obj[sel], torch.as_tensor(clip.poses.K, **f32),
                        (W, H), bool(clip.mesh.is_watertight))
    tt_geom = ClipGeometry(geom.object_verts, geom.object_faces, hand_obj[tt_frame:tt_frame + 1], clip.hand_faces,
                           geom.T_cam_to_obj, geom.K, (W, H), geom.object_closed)
    scale = min(1.0, cfg.panel_size / max(W, H))
    frame_files = FramesMeta.frame_paths(ctx.input_dir("frames"))
    rows = _SideBySideRows(geom, cfg, clip, frame_files, scale, scaled_size((W, H), scale))
    outputs = {}
    with ctx.reporter.task("export pictures", total=3) as task, torch_threads(1):
        tt = turntable(tt_geom, 0, views=cfg.turntable_views, size=cfg.view_size, ssaa=cfg.ssaa)
        write_video(out / ExportOutput.TURNTABLE, tt, fps=TURNTABLE_FPS)
        outputs["turntable"] = str(final / ExportOutput.TURNTABLE)
        task.advance()
        # Streamed in chunks so long clips never hold all renderings in memory.
        chunks = (row for s in range(0, len(sel), RENDER_CHUNK)
                  for row in rows(list(range(s, min(len(sel), s + RENDER_CHUNK)))))
        write_video(out / ExportOutput.SIDE_BY_SIDE, chunks, fps=clip.fps * len(sel) / clip.num_frames)
        outputs["side_by_side"] = str(final / ExportOutput.SIDE_BY_SIDE)
        task.advance()
        write_png(out / ExportOutput.SUMMARY, _summary_sheet(ctx, cfg, clip, rows, tt, tt_frame))
        outputs["summary"] = str(final / ExportOutput.SUMMARY)
        task.advance()
    return outputs


class _SideBySideRows:
    """Rows of the side-by-side video: input frame | reconstruction over it | novel view.

    ``rows(index)`` yields (h, 3 w, 3) uint8 rows for exported frames ``index`` (positions in
    ``clip.frames``); ``size`` = (w, h) of one panel.
    """

    def __init__(self, geom, cfg: ExportConfig, clip: _Clip, frame_files: list[Path], scale: float,
                 size: tuple[int, int]):
        self.geom, self.cfg, self.clip, self.frame_files = geom, cfg, clip, frame_files
        self.scale, self.size = scale, size

    def __call__(self, index: list[int], labels: bool = True):
        from hoirecon.export.views import input_views, novel_views, side_by_side_frame, to_uint8

        w, h = self.size
        recon, _ = input_views(self.geom, self.scale, self.cfg.ssaa, index)
        novel = novel_views(self.geom, self.cfg.novel_view_deg, h, self.cfg.ssaa, index)
        for j, i in enumerate(index):
            frame = _resize(read_rgb(self.frame_files[self.clip.frames[i]]), (w, h))
            novel_rgb = to_uint8(novel.rgb[j], novel.alpha[j])
            yield side_by_side_frame(frame, recon.rgb[j], recon.alpha[j], novel_rgb, labels)


def _summary_sheet(ctx: StageContext, cfg: ExportConfig, clip: _Clip, rows: _SideBySideRows, tt: list,
                   tt_frame: int) -> np.ndarray:
    """The summary page: a header with the clip's numbers over rows of frames with masks,
    reconstructions, novel views and turntable views, at ``cfg.summary_frames`` exported frames."""
    from hoirecon.export.views import contact_sheet

    sel, (W, H), T = clip.frames, clip.image_size, clip.num_frames
    w, h = rows.size
    hand_m, obj_m = clip.masks.hand, clip.masks.obj
    pick = np.unique(np.round(np.linspace(0, len(sel) - 1, min(cfg.summary_frames, len(sel)))).astype(int))
    masked = [_resize(overlay_masks(read_rgb(rows.frame_files[sel[i]]), hand_m[sel[i]], obj_m[sel[i]]), (w, h))
              for i in pick]
    picked_rows = list(rows(pick.tolist(), labels=False))
    recon_tiles = [r[:, w:2 * w] for r in picked_rows]
    novel_tiles = [r[:, 2 * w:] for r in picked_rows]
    tt_pick = [tt[(k * len(tt)) // 4] for k in range(4)] if len(tt) >= 4 else tt
    ext = clip.mesh.extents * 100
    header = [
        f"hoirecon export: {ctx.out_root.name}",
        f"clip: {T} frames ({len(sel)} exported), {W}x{H} px, {clip.fps:.3g} fps; world frame: {cfg.world}",
        f"object: {len(clip.object_verts)} vertices, {len(clip.object_faces)} faces, extent {ext[0]:.1f} x "
        f"{ext[1]:.1f} x {ext[2]:.1f} cm, watertight {'yes' if clip.mesh.is_watertight else 'no'} "
        f"({clip.mesh_source})",
        *_eval_lines(ctx.out_root, ctx.input_dir("fit")),
        "rows: frames with masks | reconstruction from the input camera | novel view | "
        f"turntable at frame {tt_frame}",
    ]
    return contact_sheet([masked, recon_tiles, novel_tiles, tt_pick], header, max(h, SUMMARY_MIN_TILE))


def run_export(ctx: StageContext, cfg: ExportConfig) -> dict:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:  # seconds since the previous lap
        timings[name] = time.perf_counter() - t0 - sum(timings.values())

    meta = FramesMeta.load(ctx.input_dir("frames"))
    clip = _load_clip(ctx.input_dir("fit"), ctx.input_dir("masks"), meta, cfg, torch.device(ctx.device))
    tt_frame = _turntable_frame(clip, cfg)
    out, final = ctx.tmp_dir, ctx.out_root / "export"
    lap("geometry")
    outputs, glb = _write_meshes(clip, cfg, out, final)
    outputs.update(_write_poses(clip, cfg, out, final))
    lap("files")
    if cfg.pictures:
        outputs.update(_write_pictures(ctx, cfg, clip, tt_frame, out, final))
        lap("pictures")
    if glb is not None:
        write_clip_view(ctx.out_root, out, ctx.out_root.name)
        outputs["view"] = str(final / ExportOutput.VIEW)

    summary = {
        "num_frames": int(len(clip.frames)), "format": cfg.format, "world": cfg.world,
        "mesh_source": clip.mesh_source, "object_vertices": int(len(clip.object_verts)),
        "object_faces": int(len(clip.object_faces)), "turntable_frame": tt_frame,
        "outputs": outputs, "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    if glb is not None:
        summary["glb_bytes"] = glb["bytes"]
    return summary


STAGE = STAGES["export"]
