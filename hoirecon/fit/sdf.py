"""Object signed distance functions behind one small interface (object frame, metres).

Two representations, both living inside a bounding sphere of radius ``radius`` centred at
the object-frame origin (the renderer treats everything outside the sphere as empty):

- ``GridSDF`` (the ``fast`` preset): a dense cubic grid of SDF values over [-radius, radius]^3,
  read with trilinear interpolation (``grid_sample``). Values are stored in units of
  ``radius`` so one learning rate suits objects of any size. Regularised on the grid
  itself (eikonal on central differences, squared Laplacian for smoothness), which costs
  one pass over the grid instead of double backward through the renderer. Coarse-to-fine:
  ``set_resolution`` resamples the grid (e.g. 48^3 -> 96^3).
- ``MLPSDF`` (the ``paper`` preset, DiffHOI supp. A.2): positional encoding with 6
  frequencies, 4 linear layers of width 64 each followed by Softplus, a linear output;
  geometric initialisation to a sphere (SAL/IDR), input normalised by ``radius``.

Interface (``ObjectSDF``): ``forward(x (N, 3)) -> sdf (N,)`` in metres;
``regularizers()`` -> dict of representation-specific loss terms;
``spec()`` -> plain dict (kind + hyper-parameters) that together with ``state_dict()``
rebuilds the module with ``build_object_sdf(spec)`` (see ``hoirecon.fit.scene``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hoirecon.errors import UserError

SDF_KINDS = ("grid", "mlp")


class ObjectSDF(nn.Module):
    """Base class: an SDF in the object frame inside a sphere of radius ``radius`` (metres)."""

    kind: str = "base"
    radius: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """x: (N, 3) object-frame points (m) -> sdf (N,) (m, negative inside)."""
        raise NotImplementedError

    def regularizers(self) -> dict[str, torch.Tensor]:
        """Representation-specific regularisers (scalars); empty by default."""
        return {}

    def spec(self) -> dict:
        raise NotImplementedError

    def as_render_fn(self):
        """``x (N, 3) -> (sdf (N,), feature (N, 0))`` as ``render_sdf_volume`` wants it."""

        def fn(x: torch.Tensor):
            return self(x), x.new_zeros(x.shape[0], 0)

        return fn


class GridSDF(ObjectSDF):
    """Dense SDF grid over the cube [-radius, radius]^3, trilinear interpolation.

    ``values`` (1, 1, R, R, R) is indexed [z, y, x] (``grid_sample``'s D, H, W order) and
    holds the SDF divided by ``radius``. Points outside the cube take the border value
    (clamped), which the initialisation keeps positive.
    """

    kind = "grid"
    # Width (in nodes) of the logistic occupancy that the area and volume terms share.
    OCCUPANCY_WIDTH = 1.5
    # How far outside the zero level set (in occupancy widths) ``surface_area`` measures.
    AREA_OFFSET = 2.0

    def __init__(self, radius: float, resolution: int = 48):
        super().__init__()
        if resolution < 4:
            raise UserError(f"SDF grid resolution must be >= 4, got {resolution}")
        self.radius = float(radius)
        # Default: a sphere of half the bounding radius.
        self.values = nn.Parameter(self._sphere(resolution, 0.5))
        self._in_sphere_cache: tuple | None = None

    @staticmethod
    def _coords(resolution: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """(R, R, R, 3) normalised (x, y, z) coordinates of the grid nodes, indexed [z, y, x]."""
        lin = torch.linspace(-1.0, 1.0, resolution, device=device, dtype=dtype)
        z, y, x = torch.meshgrid(lin, lin, lin, indexing="ij")
        return torch.stack([x, y, z], dim=-1)

    def _sphere(self, resolution: int, r: float) -> torch.Tensor:
        return (self._coords(resolution).norm(dim=-1) - r)[None, None]

    @property
    def resolution(self) -> int:
        return int(self.values.shape[-1])

    @property
    def node_spacing(self) -> float:
        """Grid spacing in units of ``radius`` (the unit ``values`` are stored in)."""
        return 2.0 / (self.resolution - 1)

    @property
    def voxel_size(self) -> float:
        """Grid spacing in metres."""
        return 2.0 * self.radius / (self.resolution - 1)

    def node_points(self) -> torch.Tensor:
        """(R^3, 3) object-frame coordinates (m) of the grid nodes, row-major [z, y, x]."""
        return (self._coords(self.resolution, self.values.device, self.values.dtype) * self.radius).reshape(-1, 3)

    @torch.no_grad()
    def set_values_m(self, sdf_m: torch.Tensor) -> None:
        """Overwrite the grid with SDF values in metres. sdf_m: (R, R, R) indexed [z, y, x]."""
        res = sdf_m.shape[-1]
        if tuple(sdf_m.shape) != (res, res, res):
            raise UserError(f"SDF grid must be cubic, got {tuple(sdf_m.shape)}")
        new = (sdf_m / self.radius).to(self.values)[None, None].contiguous()
        if new.shape == self.values.shape:
            self.values.data.copy_(new)
        else:
            self.values = nn.Parameter(new)

    @torch.no_grad()
    def set_resolution(self, resolution: int) -> None:
        """Resample the grid to ``resolution``^3 (trilinear). ``values`` becomes a *new*
        Parameter (autograd caches a parameter's shape), so callers must hand it to their
        optimiser in place of the old one."""
        if resolution == self.resolution:
            return
        new = F.interpolate(self.values.data, size=(resolution,) * 3, mode="trilinear", align_corners=True)
        self.values = nn.Parameter(new.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) object-frame points (m) -> sdf (N,) in metres."""
        n = x.shape[0]
        g = (x / self.radius).reshape(1, n, 1, 1, 3).to(self.values.dtype)
        v = F.grid_sample(self.values, g, mode="bilinear", padding_mode="border", align_corners=True)
        return v.reshape(n) * self.radius

    def regularizers(self) -> dict[str, torch.Tensor]:
        """eikonal: mean (|grad| - 1)^2 over interior nodes (central differences);
        smooth: mean squared Laplacian (x h^2, in units of radius), which fills the
        unobserved parts of the grid smoothly. The area cost is ``surface_area``, apart: the fit
        computes it only where it is weighted (it is a full pass over the grid)."""
        v = self.values[0, 0]
        h = self.node_spacing
        c = v[1:-1, 1:-1, 1:-1]
        grad_norm = _central_gradient_norm(v, h)
        lap = (
            v[1:-1, 1:-1, 2:] + v[1:-1, 1:-1, :-2] + v[1:-1, 2:, 1:-1] + v[1:-1, :-2, 1:-1]
            + v[2:, 1:-1, 1:-1] + v[:-2, 1:-1, 1:-1] - 6.0 * c
        )
        # Eikonal only near the surface (|sdf| < 0.25 radius): far from it the field of a
        # clamped grid cannot be a distance everywhere and need not be.
        band = (c.detach().abs() < 0.25).to(v.dtype)
        eik = ((grad_norm - 1.0) ** 2 * band).sum() / band.sum().clamp_min(1.0)
        return {"eikonal": eik, "smooth": (lap / h).pow(2).mean()}

    def surface_area(self) -> torch.Tensor:
        """Area (units of radius^2) of the surface offset outwards by ``AREA_OFFSET`` occupancy
        widths, as the total variation of a logistic occupancy of that offset surface, which is
        empty outside the bounding sphere.

        Silhouettes leave the parts of the object seen by no view unconstrained (the visual
        hull grows domes and wedges there); a small area cost flattens them (a minimal surface
        spanning the constrained rims), which is closer to most man-made objects. Measured on
        the zero level set, a sheet thinner than the occupancy width counts once instead of
        once per face, so the cost rewarded hollowing solids into opaque shells: the back of a
        ball fitted without the prior vanished (docs/experiments.md, session 15). The offset
        surface wraps a sheet on both faces. The sphere mask keeps the area counted where the
        object reaches the grid's border (the renderer sees nothing outside the sphere)."""
        v = self.values[0, 0]
        h = self.node_spacing
        eps = self.OCCUPANCY_WIDTH * h
        return occupancy_variation(v, self._in_sphere(v), self.AREA_OFFSET * eps, eps, h)

    def _in_sphere(self, like: torch.Tensor) -> torch.Tensor:
        """(R, R, R) soft mask (one node wide) of the bounding sphere, cached per resolution, device
        and dtype: at 96^3 building it took 7 ms of the area's 45 ms per step."""
        key = (self.resolution, like.device, like.dtype)
        if self._in_sphere_cache is None or self._in_sphere_cache[0] != key:
            radius_nodes = self._coords(self.resolution, like.device, like.dtype).norm(dim=-1)
            self._in_sphere_cache = (key, torch.sigmoid((1.0 - radius_nodes) / self.node_spacing))
        return self._in_sphere_cache[1]

    def volume(self, node_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Enclosed volume (units of radius^3), each node's share weighted by ``node_weights``
        (R^3,) in ``node_points`` order (None: 1 everywhere). The inside is a logistic occupancy
        of the zero level set, ``OCCUPANCY_WIDTH`` nodes wide, so the gradient reaches the nodes
        next to the surface and hardly the ones deep inside."""
        v = self.values.reshape(-1)
        h = self.node_spacing
        inside = torch.sigmoid(-v / (self.OCCUPANCY_WIDTH * h))
        if node_weights is not None:
            inside = inside * node_weights.to(v)
        return inside.sum() * h ** 3

    def spec(self) -> dict:
        return {"kind": self.kind, "radius": self.radius, "resolution": self.resolution}


def occupancy_variation(v: torch.Tensor, mask: torch.Tensor, offset: float, eps: float, h: float) -> torch.Tensor:
    """Total variation of a grid's logistic occupancy: the area of its ``offset`` level set.

    Args:
        v: (R, R, R) grid values; mask: (R, R, R) weights in [0, 1] (no gradient); offset, eps:
            the occupancy is ``sigmoid((offset - v) / eps) * mask``, zero outside the grid;
            h: node spacing.
    Returns:
        scalar: the sum over nodes of |central-difference gradient of the occupancy| x h^3.
    """
    return _OccupancyVariation.apply(v, mask.detach(), float(offset), float(eps), float(h))


class _OccupancyVariation(torch.autograd.Function):
    """``occupancy_variation`` with its gradient written out: autograd's version makes about twice
    as many passes over the grid (every slice's backward fills a zero grid). One thread, forward
    and backward: 2.7 -> 1.45 ms at 48^3 (the fit's grid), 37 -> 17 ms at 96^3."""

    @staticmethod
    def forward(ctx, v, mask, offset, eps, h):
        s = torch.sigmoid((offset - v) / eps)
        occ = F.pad(s * mask, (1, 1, 1, 1, 1, 1))
        # Unscaled central differences (2h times the gradient); the 1e-12 of
        # ``_central_gradient_norm`` scales with them.
        dx = occ[1:-1, 1:-1, 2:] - occ[1:-1, 1:-1, :-2]
        dy = occ[1:-1, 2:, 1:-1] - occ[1:-1, :-2, 1:-1]
        dz = occ[2:, 1:-1, 1:-1] - occ[:-2, 1:-1, 1:-1]
        norm = torch.sqrt(dx * dx + dy * dy + dz * dz + 4e-12 * h * h)
        ctx.save_for_backward(dx.div_(norm), dy.div_(norm), dz.div_(norm), s.mul_(1.0 - s).mul_(mask))
        ctx.eps, ctx.h = eps, h
        return norm.sum() * (h * h / 2.0)

    @staticmethod
    def backward(ctx, grad_out):
        ux, uy, uz, slope = ctx.saved_tensors
        # d area / d occupancy[k] = h^2 / 2 (u[k - 1] - u[k + 1]) along each axis, u zero outside.
        px = F.pad(ux, (1, 1))
        g = px[..., :-2] - px[..., 2:]
        py = F.pad(uy, (0, 0, 1, 1))
        g += py[:, :-2] - py[:, 2:]
        pz = F.pad(uz, (0, 0, 0, 0, 1, 1))
        g += pz[:-2] - pz[2:]
        # d occupancy / d v = -mask s (1 - s) / eps (``slope``: mask s (1 - s))
        g *= slope
        g *= -(grad_out * ctx.h * ctx.h / 2.0) / ctx.eps
        return g, None, None, None, None


def _central_gradient_norm(v: torch.Tensor, h: float) -> torch.Tensor:
    """|grad v| by central differences at the interior nodes. v: (R, R, R) -> (R-2, R-2, R-2)."""
    gx = (v[1:-1, 1:-1, 2:] - v[1:-1, 1:-1, :-2]) / (2 * h)
    gy = (v[1:-1, 2:, 1:-1] - v[1:-1, :-2, 1:-1]) / (2 * h)
    gz = (v[2:, 1:-1, 1:-1] - v[:-2, 1:-1, 1:-1]) / (2 * h)
    return torch.sqrt(gx * gx + gy * gy + gz * gz + 1e-12)


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """NeRF encoding [x, sin(2^k pi x), cos(2^k pi x)]_{k < n_freqs}. x: (N, 3) -> (N, 3 + 6 n_freqs)."""
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = x[..., None, :] * freqs[:, None]  # (N, n_freqs, 3)
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], dim=-1)


class MLPSDF(ObjectSDF):
    """The paper's implicit surface: PE(6) -> 4 x (Linear 64 + Softplus) -> Linear 1.

    Input is ``x / radius``; output is multiplied by ``radius`` (metres). Geometric init
    (Atzmon & Lipman's SAL, with IDR's zeroed encoding weights in the first layer) gives
    sdf ~= |x| - init_radius * radius. Softplus beta = 100 (VolSDF/IDR).
    """

    kind = "mlp"

    def __init__(self, radius: float, width: int = 64, depth: int = 4, n_freqs: int = 6, init_radius: float = 0.5):
        super().__init__()
        self.radius = float(radius)
        self.width, self.depth = int(width), int(depth)
        self.n_freqs, self.init_radius = int(n_freqs), float(init_radius)
        dims = [3 + 6 * n_freqs] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(depth))
        self.out = nn.Linear(width, 1)
        self.act = nn.Softplus(beta=100)
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                nn.init.zeros_(layer.bias)
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(layer.out_features))
                if i == 0:
                    layer.weight[:, 3:] = 0.0  # start from the plain-coordinate sphere
            nn.init.normal_(self.out.weight, math.sqrt(math.pi) / math.sqrt(width), 1e-4)
            nn.init.constant_(self.out.bias, -init_radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) object-frame points (m) -> sdf (N,) in metres."""
        h = positional_encoding(x / self.radius, self.n_freqs)
        for layer in self.layers:
            h = self.act(layer(h))
        return self.out(h)[:, 0] * self.radius

    def spec(self) -> dict:
        return {"kind": self.kind, "radius": self.radius, "width": self.width, "depth": self.depth,
                "n_freqs": self.n_freqs, "init_radius": self.init_radius}


def build_object_sdf(spec: dict) -> ObjectSDF:
    """Build an SDF module from ``spec`` (``{"kind": "grid"|"mlp", "radius": r, ...}``)."""
    kind = spec.get("kind")
    if kind == "grid":
        return GridSDF(spec["radius"], int(spec.get("resolution", 48)))
    if kind == "mlp":
        return MLPSDF(spec["radius"], int(spec.get("width", 64)), int(spec.get("depth", 4)),
                      int(spec.get("n_freqs", 6)), float(spec.get("init_radius", 0.5)))
    raise UserError(f"unknown object SDF kind {kind!r}; choose one of: {', '.join(SDF_KINDS)}")


def fit_sdf_to_grid(
    sdf: ObjectSDF, target_m: torch.Tensor, steps: int = 300, lr: float = 1e-3, batch: int = 8192,
    generator: torch.Generator | None = None,
) -> float:
    """Pre-fit any SDF module to a target grid (e.g. the visual hull) by regression.

    Grid: its values are copied directly. MLP: ``steps`` Adam steps of L1 regression on
    random points of the cube (target read trilinearly from the grid), errors clamped at
    0.1 radius so the far field does not dominate.

    Args:
        target_m: (R, R, R) SDF in metres on the cube [-radius, radius]^3, indexed [z, y, x].
    Returns:
        final mean absolute error near the surface (m).
    """
    if isinstance(sdf, GridSDF):
        res = sdf.resolution
        tgt = target_m
        if target_m.shape[-1] != res:
            tgt = F.interpolate(target_m[None, None], size=(res,) * 3, mode="trilinear", align_corners=True)[0, 0]
        sdf.set_values_m(tgt)
        return 0.0
    ref = GridSDF(sdf.radius, target_m.shape[-1]).to(target_m.device)
    ref.set_values_m(target_m)
    ref.requires_grad_(False)
    device = next(sdf.parameters()).device
    opt = torch.optim.Adam(sdf.parameters(), lr=lr)
    err = torch.zeros(())
    for _ in range(steps):
        x = (torch.rand(batch, 3, generator=generator) * 2.0 - 1.0).to(device) * sdf.radius
        with torch.no_grad():
            y = ref(x)
        clamp = 0.1 * sdf.radius
        pred = sdf(x)
        err = (pred.clamp(-clamp, clamp) - y.clamp(-clamp, clamp)).abs()
        loss = err.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(err.detach().mean())
