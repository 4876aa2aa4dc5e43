"""The hand's last move out of the object, after the optimisation.

The fit pushes the hand out of the object with a soft penetration term, ramped in over its
second half. A soft term leaves single frames with a fingertip several millimetres inside
(a re-grip the silhouettes pull the other way). Grasp users (robotics, physics) take those
frames as they are, so each frame whose deepest hand vertex is still more than a tolerance
inside is moved out rigidly, as far as it needs and no farther, so that the contact stays;
where no rigid move helps (fingers on both sides of a handle), its fingers are opened.

- ``ContactConfig``: the tolerances and step sizes.
- ``push_out_of_sdf``: (T, V, 3) points and an SDF -> (T, 3) translations.
- ``resolve_hand_penetration``: both steps, applied to a fitted ``HOIScene``'s hands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hoirecon.geometry.transforms import transform_points

SDF = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ContactConfig:
    """How far the hand may stay inside the object after the fit, and how far it may be moved.

    max_depth: a frame whose deepest hand vertex lies deeper than this (m) is moved.
    target_depth: it is moved until its deepest vertex is at most this deep (m): a little
        inside, so that the hand still touches the surface.
    max_shift: no frame moves farther than this (m); a hand deeper than that is wrong in
        another way (its fingers wrap a part the fit made too thick), and a rigid move would
        only throw it off the object.
    iterations: moves per frame (each along the depth-weighted outward normal).
    finger_steps: where no rigid move brings a hand out (fingers wrapped round a part the fit
        made a little too thick), gradient steps on that frame's articulation that open the
        fingers just enough, pulled back to the fitted articulation (0 = rigid moves only).
    finger_lr: their step size (rad); the hand may move too, ``finger_shift_lr`` (m) per step.
    finger_pull: weight of the pull back to the fitted articulation, per rad^2, against each
        frame's deepest vertex's depth (m) (the move is pulled back with weight 1 per m^2): a
        tie-break between equally deep poses; the steps, and keeping a frame's change only where
        it made the frame shallower, bound how far the fingers go.
    """

    max_depth: float = 0.002
    target_depth: float = 0.001
    max_shift: float = 0.015
    iterations: int = 20
    finger_steps: int = 150
    finger_lr: float = 0.03
    finger_shift_lr: float = 0.0005
    finger_pull: float = 1e-6


def _outward_normals(sdf: SDF, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (N,), unit gradients (N, 3)) of ``sdf`` at ``points`` (N, 3)."""
    with torch.enable_grad():
        p = points.detach().requires_grad_(True)
        values = sdf(p)
        (grad,) = torch.autograd.grad(values.sum(), p)
    return values.detach(), torch.nn.functional.normalize(grad, dim=-1)


def push_out_of_sdf(points: torch.Tensor, sdf: SDF, cfg: ContactConfig = ContactConfig()) -> torch.Tensor:
    """Per-set rigid translations that bring each set's deepest point out towards ``cfg.target_depth``.

    Each move goes along the outward normals of the points inside, the deepest weighted most,
    and is kept only where it makes the set's deepest point shallower (fingers wrapped round
    a part leave no such move: that set stays where it is).

    Args:
        points: (T, V, 3) point sets (a frame's hand vertices), in the SDF's frame.
        sdf: ``x (N, 3) -> (N,)`` signed distance, negative inside (m).
    Returns:
        (T, 3) translations, zero for sets no deeper than ``cfg.max_depth``, at most
        ``cfg.max_shift`` long; no set ends deeper than it started.
    """
    T, V, _ = points.shape
    shift = points.new_zeros(T, 3)

    def deepest_of(candidate: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        moved = points[sets] + candidate[:, None]
        return (-sdf(moved.reshape(-1, 3)).reshape(-1, V)).amax(1)

    everyone = torch.arange(T, device=points.device)
    deepest = deepest_of(shift, everyone).detach()
    todo = deepest > cfg.max_depth
    for _ in range(cfg.iterations):
        idx = torch.nonzero(todo).squeeze(1)
        if idx.numel() == 0:
            break
        values, normals = _outward_normals(sdf, (points[idx] + shift[idx, None]).reshape(-1, 3))
        depth = (-values).clamp_min(0.0).reshape(-1, V)
        # The deepest points lead the direction: fingers on both sides of a handle cancel out
        # in a plain mean, and the deepest one is what must come out.
        direction = torch.nn.functional.normalize((depth.pow(2)[..., None] * normals.reshape(-1, V, 3)).sum(1), dim=-1)
        step = (deepest[idx] - cfg.target_depth).clamp_min(0.0)
        best_shift, best_deepest = shift[idx].clone(), deepest[idx].clone()
        for fraction in (1.0, 0.5, 0.25):
            candidate = shift[idx] + direction * (fraction * step)[:, None]
            candidate = candidate * (cfg.max_shift / candidate.norm(dim=-1, keepdim=True).clamp_min(cfg.max_shift))
            reached = deepest_of(candidate, idx).detach()
            better = reached < best_deepest - 1e-5
            best_shift[better], best_deepest[better] = candidate[better], reached[better]
        improved = best_deepest < deepest[idx] - 1e-5
        shift[idx], deepest[idx] = best_shift, best_deepest
        todo[idx[~improved | (best_deepest <= cfg.target_depth + 1e-5)]] = False
    return shift


@torch.no_grad()
def resolve_hand_penetration(scene, cfg: ContactConfig = ContactConfig()) -> dict:
    """Move each frame's hand of a fitted ``HOIScene`` out of its object (the object stays
    where the cameras see it). Returns a report for the fit's summary: the frames moved, how
    far (mm), and the deepest hand vertex (mm) of every frame before and after."""
    verts_hand, _ = scene.hand_verts_hand()
    T_h2o = scene.T_hand_to_obj()
    verts_obj = transform_points(T_h2o, verts_hand)
    before = _deepest_mm(scene.sdf, verts_obj)
    shift = push_out_of_sdf(verts_obj, scene.sdf, cfg)
    scene.shift_hand_in_object(shift)
    after = torch.tensor(_deepest_mm(scene.sdf, transform_points(scene.T_hand_to_obj(), verts_hand)))
    still = torch.nonzero(after > cfg.max_depth * 1000.0).squeeze(1)
    opened = _open_fingers(scene, still, cfg) if cfg.finger_steps and still.numel() else []
    if opened:
        verts_hand, _ = scene.hand_verts_hand()
        after = torch.tensor(_deepest_mm(scene.sdf, transform_points(scene.T_hand_to_obj(), verts_hand)))
    moved = torch.nonzero(shift.norm(dim=-1) > 0).squeeze(1).tolist()
    return {"max_depth_mm": cfg.max_depth * 1000.0, "moved_frames": moved,
            "moved_mm": [round(float(shift[t].norm()) * 1000.0, 2) for t in moved], "fingers_opened_frames": opened,
            "deepest_before_mm": [round(v, 2) for v in before], "deepest_after_mm": [round(float(v), 2) for v in after]}


def _open_fingers(scene, frames: torch.Tensor, cfg: ContactConfig) -> list[int]:
    """Open the fingers of ``frames`` (n,) of a fitted scene out of its object, moving the hand
    a little with them (see ``ContactConfig.finger_steps``); keeps the change only on frames
    whose deepest vertex got shallower. Returns the frames changed."""
    frames = frames.to(scene.artic_delta.device)
    T_h2o = scene.T_hand_to_obj(frames)
    fitted = scene.articulation(frames)
    zeros = torch.zeros(len(frames), 3, device=fitted.device)

    def verts_in_object(articulation: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        verts = scene.hand_model(articulation, zeros, scene.shape[None].detach(), None, side=scene.side).verts
        return transform_points(T_h2o, verts) + shift[:, None]

    before = torch.tensor(_deepest_mm(scene.sdf, verts_in_object(fitted, zeros)), device=fitted.device)
    best, best_delta, best_shift = before.clone(), torch.zeros_like(fitted), zeros.clone()
    with torch.enable_grad():
        delta = torch.zeros_like(fitted, requires_grad=True)
        shift = torch.zeros_like(zeros, requires_grad=True)
        opt = torch.optim.Adam([{"params": [delta], "lr": cfg.finger_lr},
                                {"params": [shift], "lr": cfg.finger_shift_lr}])
        for _ in range(cfg.finger_steps):
            verts = verts_in_object(fitted + delta, shift)
            depth = (-scene.sdf(verts.reshape(-1, 3)).reshape(len(frames), -1) - cfg.target_depth).clamp_min(0.0)
            # The deepest vertex of each frame, not all of them: a sum over every vertex inside
            # settles where many shallow fingertips balance one deep knuckle (toy_plane, 7 mm).
            loss = depth.amax(1).sum() + cfg.finger_pull * delta.pow(2).sum() + shift.pow(2).sum()
            # Gradients of these two only: the fitted SDF's parameters are not touched.
            delta.grad, shift.grad = torch.autograd.grad(loss, [delta, shift])
            reached = (depth.detach().amax(1) + cfg.target_depth) * 1000.0
            better = reached < best
            best[better] = reached[better]
            best_delta[better], best_shift[better] = delta.detach()[better], shift.detach()[better]
            opt.step()
    delta, shift = best_delta.detach(), best_shift.detach()
    after = torch.tensor(_deepest_mm(scene.sdf, verts_in_object(fitted + delta, shift)), device=fitted.device)
    better = (after < before - 1e-3).to(frames.device)
    scene.artic_delta[frames[better]] += delta[better]
    moves = torch.zeros(scene.num_frames, 3, device=shift.device)
    moves[frames[better]] = shift[better]
    scene.shift_hand_in_object(moves)
    return frames[better].tolist()


def _deepest_mm(sdf: SDF, verts_obj: torch.Tensor) -> list[float]:
    """(T,) deepest of each frame's (T, V, 3) vertices inside ``sdf``, in mm (0 = none inside)."""
    T, V, _ = verts_obj.shape
    depth = (-sdf(verts_obj.reshape(-1, 3)).reshape(T, V)).amax(1).clamp_min(0.0)
    return (depth * 1000.0).tolist()
