"""Solid primitives in patient space (LPS mm) that the anatomy is assembled from.

Each shape knows its bounding box, so painting evaluates it only on the voxels it can touch, and
tests membership on broadcastable coordinate arrays (an open mesh), so no dense grid of
coordinates is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Shape(Protocol):
    """A solid: a bounding box and a vectorised inside test."""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest LPS corner (mm) of a box holding the shape."""
        ...

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside; x, y, z broadcast against each other."""
        ...


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid (a sphere when the semi-axes are equal)."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        centre, semi = np.asarray(self.centre), np.asarray(self.semi_axes)
        return centre - semi, centre + semi

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        (cx, cy, cz), (ax, ay, az) = self.centre, self.semi_axes
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0


@dataclass(frozen=True)
class EllipticCylinder:
    """Elliptic cross-section in the axial plane, extruded between two z levels (may be infinite)."""

    centre: tuple[float, float]
    semi_axes: tuple[float, float]
    z_range: tuple[float, float] = (-np.inf, np.inf)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        (cx, cy), (ax, ay) = self.centre, self.semi_axes
        return np.array([cx - ax, cy - ay, self.z_range[0]]), np.array([cx + ax, cy + ay, self.z_range[1]])

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        (cx, cy), (ax, ay) = self.centre, self.semi_axes
        inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0
        return inside & (z >= self.z_range[0]) & (z <= self.z_range[1])


@dataclass(frozen=True)
class Capsule:
    """A tube between two points whose radius tapers linearly: vessels, airways, ribs."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius_start: float
    radius_end: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.array([self.start, self.end])
        reach = max(self.radius_start, self.radius_end)
        return ends.min(axis=0) - reach, ends.max(axis=0) + reach

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        (sx, sy, sz), (ex, ey, ez) = self.start, self.end
        dx, dy, dz = ex - sx, ey - sy, ez - sz
        length_sq = max(dx * dx + dy * dy + dz * dz, 1e-12)
        # Position of the closest point along the axis, 0 at start and 1 at end.
        t = np.clip(((x - sx) * dx + (y - sy) * dy + (z - sz) * dz) / length_sq, 0.0, 1.0)
        radius = self.radius_start + t * (self.radius_end - self.radius_start)
        dist_sq = (x - sx - t * dx) ** 2 + (y - sy - t * dy) ** 2 + (z - sz - t * dz) ** 2
        return dist_sq <= radius**2
