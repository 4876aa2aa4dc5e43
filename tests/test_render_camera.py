"""hoirecon.render.camera: the pinhole helpers not covered by the renderer tests."""

from __future__ import annotations

import numpy as np
import torch

from hoirecon.render.camera import make_intrinsics, project_points, strided_grid


def test_strided_grid_sees_a_point_where_the_strided_image_has_it():
    K = make_intrinsics(300.0, 310.0, 159.5, 119.5)
    point = torch.tensor([[[0.05, -0.02, 0.5]]])
    for stride in (1, 2, 3):
        K_grid, h, w = strided_grid(K, 240, 321, stride)
        assert (h, w) == np.zeros((240, 321))[::stride, ::stride].shape
        full, grid = project_points(point, K)[0, 0], project_points(point, K_grid)[0, 0]
        assert torch.allclose(grid * stride, full, atol=1e-4)
    assert torch.equal(K, make_intrinsics(300.0, 310.0, 159.5, 119.5))  # the input is left as it was
