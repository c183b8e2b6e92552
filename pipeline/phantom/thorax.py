"""The thorax model: body, lungs with vessel trees, heart, great vessels, airways, liver, spine, ribs.

Everything is placed in patient coordinates (LPS mm, body axis along z through the origin, heart
to the patient's left and anterior, liver to the right and below the diaphragm). The seed jitters
body size, organ positions and the vessel trees slightly, so several seeds give different but
equally plausible studies. Placement of the lung tumour lives here too because "inside a lung,
clear of the mediastinum" is a statement about this anatomy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.phantom.anatomy import Anatomy, Structure
from pipeline.phantom.grid import Grid
from pipeline.phantom.shapes import Capsule, Ellipsoid, EllipticCylinder
from pipeline.phantom.tissues import Tissue

T = Tissue
SIDES = {"right": -1.0, "left": 1.0}  # sign of LPS x: patient right is -x
#: Clearance (mm) kept between the tumour surface and anything that is not lung.
TUMOUR_CLEARANCE_MM = 3.0
#: Random centres tried per lung before giving up on it.
TUMOUR_ATTEMPTS = 400


@dataclass(frozen=True)
class Tumour:
    """A spherical lung lesion: LPS centre (mm), radius (mm), and which lung holds it."""

    centre: tuple[float, float, float]
    radius: float
    lung: str

    def structure(self) -> Structure:
        """The tumour as a solid painted over everything else."""
        return Structure(Ellipsoid(self.centre, (self.radius,) * 3), T.TUMOUR)


@dataclass(frozen=True)
class Thorax:
    """The anatomy without a tumour, plus the lung envelopes a tumour may be placed in."""

    anatomy: Anatomy
    lungs: dict[str, Ellipsoid]


def build_thorax(rng: np.random.Generator) -> Thorax:
    """Draw one thorax: a fixed layout whose sizes and positions vary a few percent with ``rng``."""
    scale = rng.uniform(0.94, 1.06)
    body = (165.0 * scale, 115.0 * scale)
    lungs = {
        side: Ellipsoid(
            (sign * (74.0 * scale + rng.uniform(-3, 3)), 5.0 + rng.uniform(-3, 3), 22.0 + rng.uniform(-5, 5)),
            (55.0 * scale, 68.0 * scale, 122.0),
        )
        for side, sign in SIDES.items()
    }
    structures = [
        Structure(EllipticCylinder((0.0, 0.0), body), T.FAT),
        Structure(EllipticCylinder((0.0, 0.0), (body[0] - 14.0, body[1] - 12.0)), T.SOFT_TISSUE),
        *(Structure(lung, T.LUNG, over=frozenset({T.SOFT_TISSUE})) for lung in lungs.values()),
        # Diaphragm: the abdomen's dome pushes up into the lung bases.
        Structure(Ellipsoid((0.0, 10.0, -185.0), (175.0 * scale, 125.0 * scale, 115.0)), T.SOFT_TISSUE,
                  over=frozenset({T.LUNG})),
        Structure(Ellipsoid((-55.0 * scale, 5.0, -125.0), (100.0 * scale, 85.0 * scale, 85.0)), T.LIVER,
                  over=frozenset({T.SOFT_TISSUE, T.LUNG})),
        *_heart(rng, scale),
        *_great_vessels(scale),
        *_airways(scale),
        *(s for side, sign in SIDES.items() for s in _vessel_tree(rng, lungs[side], _hilum(sign, scale))),
        *_spine(rng, scale),
        *_ribs(rng, body),
    ]
    return Thorax(Anatomy(tuple(structures)), lungs)


def _hilum(sign: float, scale: float) -> tuple[float, float, float]:
    """Where the bronchus and the pulmonary artery enter one lung."""
    return (sign * 45.0 * scale, 8.0, 22.0)


def _heart(rng: np.random.Generator, scale: float) -> list[Structure]:
    """Myocardium around a contrast-filled blood pool, sitting on the diaphragm left-anterior."""
    centre = (22.0 * scale + rng.uniform(-4, 4), -25.0 * scale + rng.uniform(-4, 4), -20.0 + rng.uniform(-4, 4))
    outer = (60.0 * scale, 50.0 * scale, 50.0)
    wall = 11.0
    return [
        Structure(Ellipsoid(centre, outer), T.MYOCARDIUM, over=frozenset({T.SOFT_TISSUE, T.LUNG, T.LIVER})),
        Structure(Ellipsoid(centre, tuple(a - wall for a in outer)), T.BLOOD_POOL, over=frozenset({T.MYOCARDIUM})),
    ]


def _great_vessels(scale: float) -> list[Structure]:
    """Ascending aorta, arch and descending aorta (left of the spine), contrast-filled."""
    ascending_top = (15.0 * scale, -30.0 * scale, 55.0)
    arch_end = (26.0 * scale, 30.0 * scale, 68.0)
    ascending_root = (15.0 * scale, -30.0 * scale, -5.0)
    mediastinum = frozenset({T.SOFT_TISSUE, T.LUNG})
    return [
        Structure(Capsule(ascending_root, ascending_top, 14.0, 14.0), T.BLOOD_POOL, over=mediastinum),
        Structure(Capsule(ascending_top, arch_end, 13.0, 12.5), T.BLOOD_POOL, over=mediastinum),
        Structure(Capsule(arch_end, (26.0 * scale, 32.0 * scale, -400.0), 12.0, 11.0), T.BLOOD_POOL,
                  over=mediastinum | {T.LIVER}),
    ]


def _airways(scale: float) -> list[Structure]:
    """Trachea from the neck to the carina and the two main bronchi, each a soft-tissue wall around air."""
    carina = (0.0, 5.0, 45.0)
    tubes = [((0.0, 0.0, 400.0), carina, 11.0, 8.5)]
    tubes += [(carina, _hilum(sign, scale), 7.5, 5.5) for sign in SIDES.values()]
    walls = [Structure(Capsule(a, b, outer, outer), T.SOFT_TISSUE, over=frozenset({T.SOFT_TISSUE, T.LUNG}))
             for a, b, outer, _ in tubes]
    lumens = [Structure(Capsule(a, b, inner, inner), T.AIR, over=frozenset({T.SOFT_TISSUE}))
              for a, b, _, inner in tubes]
    return walls + lumens


def _vessel_tree(
    rng: np.random.Generator, lung: Ellipsoid, hilum: tuple[float, float, float], depth: int = 3
) -> list[Structure]:
    """Pulmonary vessels branching from the hilum towards random points of the lung, tapering."""

    def point_in_lung() -> np.ndarray:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        return np.asarray(lung.centre) + 0.8 * rng.uniform() ** (1 / 3) * direction * np.asarray(lung.semi_axes)

    structures: list[Structure] = []

    def branch(start: np.ndarray, target: np.ndarray, radius: float, level: int) -> None:
        end = start + 0.55 * (target - start)
        structures.append(Structure(Capsule(tuple(start), tuple(end), radius, 0.8 * radius), T.PULMONARY_VESSEL,
                                    over=frozenset({T.LUNG})))
        if level < depth:
            for _ in range(2):
                child_target = np.clip(target + rng.normal(0.0, 25.0, size=3), *lung.bounds())
                branch(end, child_target, 0.7 * radius, level + 1)

    for _ in range(4):
        branch(np.asarray(hilum), point_in_lung(), 6.0, 0)
    return structures


def _spine(rng: np.random.Generator, scale: float) -> list[Structure]:
    """Vertebrae (cortical shell, marrow core, arch, spinous and transverse processes) with disc gaps."""
    body_y, arch_y = 55.0 * scale, 80.0 * scale
    pitch, height = 27.0, 21.0
    structures = []
    for bottom in np.arange(-600.0, 600.0, pitch) + rng.uniform(0, pitch):
        top, middle = bottom + height, bottom + height / 2
        structures += [
            Structure(EllipticCylinder((0.0, body_y), (19.0, 16.0), (bottom, top)), T.CORTICAL_BONE),
            Structure(EllipticCylinder((0.0, body_y), (16.0, 13.0), (bottom + 2.0, top - 2.0)), T.MARROW_BONE),
            Structure(EllipticCylinder((0.0, arch_y), (15.0, 12.0), (bottom + 3.0, top - 3.0)), T.CORTICAL_BONE),
            Structure(Capsule((0.0, arch_y + 11.0, middle + 4.0), (0.0, 100.0 * scale, middle - 8.0), 4.5, 3.5),
                      T.CORTICAL_BONE),
            *(Structure(Capsule((sign * 10.0, arch_y - 2.0, middle), (sign * 32.0, arch_y + 2.0, middle), 4.0, 3.0),
                        T.CORTICAL_BONE) for sign in SIDES.values()),
        ]
    # The spinal canal runs through every vertebra and disc.
    structures.append(Structure(EllipticCylinder((0.0, arch_y), (8.0, 7.0)), T.SOFT_TISSUE))
    return structures


def _ribs(rng: np.random.Generator, body: tuple[float, float]) -> list[Structure]:
    """Twelve rib pairs: tubes curving from the spine round the chest wall, falling anteriorly.

    An axial slice cuts them as the ring of bone blobs seen on CT; the sternum closes it in front.
    """
    ring = (body[0] - 27.0, body[1] - 22.0)
    drop, segments = 45.0, 7
    structures = []
    for k in range(12):
        attach_z = 150.0 - 25.0 * k + rng.uniform(-3, 3)
        sweep = np.linspace(0.45, 2.55 if k < 7 else 2.1 - 0.08 * (k - 7), segments + 1)
        for sign in SIDES.values():
            path = [(sign * ring[0] * math.sin(a), ring[1] * math.cos(a), attach_z - drop * (1 - math.cos(a)) / 2)
                    for a in sweep]
            structures += [Structure(Capsule(p, q, 5.0, 4.5), T.CORTICAL_BONE) for p, q in zip(path, path[1:])]
    structures.append(Structure(EllipticCylinder((0.0, -(body[1] - 20.0)), (14.0, 6.0), (-70.0, 90.0)),
                                T.CORTICAL_BONE))
    return structures


def place_tumour(
    thorax: Thorax, rng: np.random.Generator, radius: float, field_of_view: tuple[np.ndarray, np.ndarray]
) -> Tumour | None:
    """A tumour centre in a random lung, inside the field of view, with lung all round it; None if none fits."""
    margin = radius + TUMOUR_CLEARANCE_MM
    low, high = field_of_view[0] + margin, field_of_view[1] - margin
    sides = list(thorax.lungs)
    first = int(rng.integers(len(sides)))
    for side in sides[first:] + sides[:first]:
        lung = thorax.lungs[side]
        box_low, box_high = np.maximum(lung.bounds()[0], low), np.minimum(lung.bounds()[1], high)
        if np.any(box_low > box_high):
            continue
        for _ in range(TUMOUR_ATTEMPTS):
            centre = rng.uniform(box_low, box_high)
            if _surrounded_by_lung(thorax.anatomy, centre, margin):
                return Tumour(tuple(float(c) for c in centre), float(radius), side)
    return None


def _surrounded_by_lung(anatomy: Anatomy, centre: np.ndarray, reach: float) -> bool:
    """Whether every point within ``reach`` of ``centre`` is lung parenchyma or a pulmonary vessel."""
    step = 2.0
    n = int(np.ceil(2 * reach / step)) + 1
    probe = Grid.centred((n, n, n), (step, step, step), tuple(centre))
    ball = probe.squared_distances(centre) <= reach**2
    return bool(np.isin(anatomy.labels(probe)[ball], [T.LUNG, T.PULMONARY_VESSEL]).all())
