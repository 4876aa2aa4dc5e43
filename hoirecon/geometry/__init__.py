"""Small batched, differentiable geometry helpers (rotations, rigid transforms, ...).

Import from the submodules (``from hoirecon.geometry.rotations import axis_angle_to_matrix``);
the rotation and rigid-transform helpers are also re-exported here for convenience.
"""

from hoirecon.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_rotation_matrix,
    reflect_axis_angle,
    rotation_6d_to_matrix,
    rotation_between_vectors,
    skew,
)
from hoirecon.geometry.transforms import invert_rigid, transform_points

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "invert_rigid",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "quaternion_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "random_rotation_matrix",
    "reflect_axis_angle",
    "rotation_6d_to_matrix",
    "rotation_between_vectors",
    "skew",
    "transform_points",
]
