"""Findings drawn the way they look on a chest radiograph.

Each finding acts in up to two places (see :mod:`.anatomy`): it may change the patient's
:class:`~.anatomy.Anatomy` before drawing (cardiomegaly → larger cardiothoracic ratio,
atelectasis → volume loss, emphysema → flat low domes), and it paints layers of the drawn
:class:`~.anatomy.Scene` (opacity replacing lung air, lucent rims, dense devices). Every
painter returns the soft masks of the focal lesions it drew, which become ground-truth boxes.

Severity is in (0, 1]; below :data:`SUBTLE` a finding is drawn faintly and a CheXpert-style
labeler calls it uncertain (-1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from chexbench.datasets.phantom.anatomy import SIDE_SIGN, Anatomy, Scene, lung_mask, with_changes
from chexbench.datasets.phantom.fields import (
    F32,
    ellipse,
    gaussian_blob,
    smooth_noise,
    soft_step,
    tube,
)
from chexbench.datasets.phantom.placement import draw_centre, draw_size

SUBTLE = 0.3  # severity below which a finding is "subtle" (uncertain in CheXpert)
BILATERAL = 2


@dataclass(frozen=True)
class Finding:
    """One finding in one study: its harmonized name, severity, side and a location seed.

    ``side`` is 0 (image left = patient right), 1 (patient left) or 2 (bilateral); the
    ``place`` seed fixes where a focal lesion sits, so it stays put across a patient's studies.
    """

    name: str
    severity: float
    side: int
    place: int

    @property
    def subtle(self) -> bool:
        return self.severity < SUBTLE


Lesion = tuple[str, np.ndarray]  # (harmonized label, soft mask) of one drawn focal lesion


# -- stage 1: anatomy changes -------------------------------------------------------------
def adjust_anatomy(anat: Anatomy, findings: list[Finding]) -> Anatomy:
    """The patient's anatomy as changed by the study's findings."""
    for f in findings:
        s = f.severity
        if f.name == "cardiomegaly":
            anat = with_changes(anat, ctr=0.505 + 0.17 * s)
        elif f.name == "enlarged_cardiomediastinum":
            anat = with_changes(anat, mediastinum_half_width=anat.mediastinum_half_width + 0.04 + 0.07 * s)
        elif f.name == "atelectasis":
            scale = list(anat.lung_scale)
            for side in _sides(f):
                scale[side] = min(scale[side], 1 - 0.10 - 0.10 * s)
            anat = with_changes(anat, lung_scale=tuple(scale))
        elif f.name == "emphysema":
            anat = with_changes(
                anat,
                dome_y=(anat.dome_y[0] + 0.06 + 0.06 * s, anat.dome_y[1] + 0.06 + 0.06 * s),
                dome_height=anat.dome_height * (0.6 - 0.3 * s),
                thorax_half_width=anat.thorax_half_width + 0.03 * s,
                lucency=0.05 + 0.08 * s,
            )
    return anat


def _sides(f: Finding) -> tuple[int, ...]:
    return (0, 1) if f.side == BILATERAL else (f.side,)


def _point_in_lung(
    scene: Scene,
    side: int,
    rng: np.random.Generator,
    zone: tuple[float, float],
    lateral: tuple[float, float] = (-0.55, 0.6),
) -> tuple[float, float]:
    """A point inside one lung: ``zone`` is the apex→dome fraction range, ``lateral`` the medial→lateral
    one."""
    g = scene.lung_geometry[side]
    frac = rng.uniform(*zone)
    y = g["apex"] + frac * (g["dome"] - g["dome_height"] - g["apex"])
    x = g["cx"] + SIDE_SIGN[side] * rng.uniform(*lateral) * g["a"]
    return float(x), float(y)


def _place(
    scene: Scene,
    name: str,
    side: int,
    rng: np.random.Generator,
    zone: tuple[float, float],
    lateral: tuple[float, float] = (-0.55, 0.6),
) -> tuple[float, float]:
    """A focal lesion's centre: drawn from the real NIH boxes of ``name`` inside ``side``'s lung field
    (:func:`~chexbench.datasets.phantom.placement.draw_centre`); a lateral view, or a finding without real
    boxes, falls back to a point in the lung's ``zone``."""
    placed = draw_centre(name, scene, side, rng)
    return placed if placed is not None else _point_in_lung(scene, side, rng, zone, lateral)


def _extent(
    scene: Scene,
    name: str,
    rng: np.random.Generator,
    default: tuple[float, float],
    scale: float,
    lo: float,
    hi: float,
) -> tuple[float, float]:
    """Half extents (x, y) in scene units: a real box of ``name`` (times ``scale``, the painter's box per unit
    of
    its radius), clipped to [lo, hi]; ``default`` without real boxes."""
    size = draw_size(name, scene, rng)
    if size is None:
        return default
    return float(np.clip(size[0] * scale, lo, hi)), float(np.clip(size[1] * scale, lo, hi))


def _opacify(scene: Scene, amount: np.ndarray) -> None:
    """Replace a fraction ``amount`` of lung air by fluid/tissue (opacities never exceed 1)."""
    np.maximum(scene.opacity, np.clip(amount, 0, 1) * scene.lung, out=scene.opacity)


# -- stage 2: painters --------------------------------------------------------------------
def paint_effusion(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Basal opacity with a meniscus climbing the lateral wall; the costophrenic angle blunts."""
    x, y = scene.x, scene.y
    out = []
    for side in _sides(f):
        g = scene.lung_geometry[side]
        height = (0.06 + 0.30 * f.severity) * (g["dome"] - g["apex"])
        level = g["dome"] - g["dome_height"] * 0.3 - height
        lateral_t = np.clip(SIDE_SIGN[side] * (x - g["cx"]) / g["a"], -1, 1.3)
        meniscus = level - 0.10 * f.severity * np.clip(lateral_t, 0, None) ** 2 - 0.03 * lateral_t
        fluid = soft_step(y - meniscus, 0.02 + 0.02 * f.severity) * scene.lungs[side]
        _opacify(scene, 0.95 * fluid)
        scene.marking_scale *= 1 - fluid
        out.append(("pleural_effusion", fluid))
    return out


def paint_pneumothorax(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Lucent apical/lateral rim without lung markings, bounded by a thin bright pleural line."""
    x, y = scene.x, scene.y
    out = []
    for side in _sides(f):
        g = scene.lung_geometry[side]
        shrink = 0.88 - 0.25 * f.severity
        # the collapsed lung retracts towards the hilum (medial, mid-height)
        gc = dict(g)
        gc["cx"] = g["cx"] - SIDE_SIGN[side] * (1 - shrink) * g["a"] * 0.9
        gc["cy"] = g["cy"] + (1 - shrink) * g["b"] * 0.35
        edge = 1.5 / x.shape[1]
        collapsed = lung_mask(x, y, gc, edge, shrink=shrink)
        rim = np.clip(scene.lungs[side] - collapsed, 0, 1)
        # how far down the free air reaches: to the bottom of a real pneumothorax box (mostly apical), drawn
        # on this side
        placed, size = draw_centre("pneumothorax", scene, side, rng), draw_size("pneumothorax", scene, rng)
        if placed is not None and size is not None:
            reach = max(placed[1] + size[1], g["apex"] + 0.3 * (g["dome"] - g["apex"]))
            rim = rim * soft_step(reach - y, 0.02)
        scene.marking_scale *= 1 - rim
        scene.extra_lucency += (0.05 + 0.05 * f.severity) * rim
        # pleural line: the boundary of the collapsed lung, inside the rim
        boundary = collapsed * (1 - collapsed) * 4
        scene.dense += 0.08 * boundary * soft_step(rim - 0.01, 0.005) * scene.lungs[side]
        out.append(("pneumothorax", rim))
    return out


def _blotch(
    scene: Scene,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    cells: int,
    threshold: float,
) -> np.ndarray:
    """An irregular soft patch: an elliptic envelope times thresholded smooth noise."""
    h, w = scene.x.shape
    env = gaussian_blob(scene.x, scene.y, cx, cy, rx, ry)
    texture = smooth_noise(rng, h, w, cells)
    return np.clip(env * 1.6 + 0.35 * texture - threshold, 0, 1)


def paint_consolidation(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Dense homogeneous lobar opacity with one sharp (fissural) border and air bronchograms."""
    out = []
    for side in _sides(f):
        lower = rng.random() < 0.65
        cx, cy = _place(scene, "consolidation", side, rng, (0.62, 0.8) if lower else (0.2, 0.4), (-0.3, 0.4))
        lower = cy > scene.lung_geometry[side]["cy"]  # the fissure bounds the lobe it is in
        rx, ry = _extent(
            scene, "consolidation", rng, (0.14 + 0.08 * f.severity, 0.11 + 0.07 * f.severity), 0.8, 0.06, 0.3
        )
        patch = np.clip(_blotch(scene, rng, cx, cy, rx, ry, 10, 0.55) * 2.5, 0, 1)
        # fissure: a straight, sharp upper margin for lower-lobe, lower margin for upper-lobe disease
        fissure_y = cy - 0.6 * ry if lower else cy + 0.6 * ry
        sharp = soft_step((scene.y - fissure_y) * (1 if lower else -1), 0.01)
        patch = patch * sharp
        bronchi = soft_step(0.35 - np.abs(smooth_noise(rng, *scene.x.shape, 24)), 0.05)
        amount = (0.45 + 0.5 * f.severity) * patch * (1 - 0.2 * bronchi)
        _opacify(scene, amount)
        out.append(("consolidation", patch * scene.lungs[side]))
    return out


def paint_pneumonia(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Patchy, fluffy, multifocal air-space opacities in one zone."""
    out = []
    for side in _sides(f):
        cx, cy = _place(scene, "pneumonia", side, rng, (0.4, 0.7), (-0.1, 0.3))
        sx, sy = _extent(scene, "pneumonia", rng, (0.2, 0.24), 0.5, 0.04, 0.2)  # spread of the foci
        total = np.zeros_like(scene.x)
        for _ in range(int(rng.integers(4, 7))):
            px = cx + rng.normal(0, sx)
            py = cy + rng.normal(0, sy)
            r = rng.uniform(0.05, 0.075) * (0.8 + 0.4 * f.severity)
            total = np.maximum(total, gaussian_blob(scene.x, scene.y, px, py, r, r))
        total = np.clip(total * 1.3 * (0.85 + 0.25 * smooth_noise(rng, *scene.x.shape, 20)), 0, 1)
        _opacify(scene, (0.6 + 0.35 * f.severity) * total)
        out.append(("pneumonia", total * scene.lungs[side]))
    return out


def paint_infiltration(
    scene: Scene, f: Finding, rng: np.random.Generator, label: str = "infiltration"
) -> list[Lesion]:
    """Ill-defined hazy opacity (nonspecific 'infiltrate' / 'lung opacity')."""
    out = []
    for side in _sides(f):
        cx, cy = _place(scene, label, side, rng, (0.3, 0.85), (-0.3, 0.5))
        rx, ry = _extent(scene, label, rng, (0.16, 0.14), 0.7, 0.06, 0.3)
        patch = _blotch(scene, rng, cx, cy, rx, ry, 6, 0.4)
        _opacify(scene, (0.25 + 0.3 * f.severity) * patch)
        out.append((label, patch * scene.lungs[side]))
    return out


def paint_edema(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Bilateral perihilar ('bat-wing') haze, vascular blurring, Kerley B lines when marked."""
    x, y = scene.x, scene.y
    (lx, ly), (rx, ry) = scene.hilum
    haze = np.maximum(
        gaussian_blob(x, y, lx - 0.08, ly + 0.05, 0.20, 0.26),
        gaussian_blob(x, y, rx + 0.08, ry + 0.05, 0.20, 0.26),
    )
    haze = haze * (0.85 + 0.15 * smooth_noise(rng, *x.shape, 12))
    _opacify(scene, (0.30 + 0.40 * f.severity) * haze)
    scene.marking_scale *= 1 + 0.8 * f.severity * haze  # indistinct, engorged vessels
    if f.severity > 0.5:
        kerley = np.zeros_like(x)
        for side in (0, 1):
            g = scene.lung_geometry[side]
            xl = g["lateral"]
            for k in range(4):
                yk = g["dome"] - g["dome_height"] * 0.2 - 0.05 - 0.035 * k
                pts = np.array([[xl - SIDE_SIGN[side] * 0.10, yk], [xl, yk]], F32)
                kerley = np.maximum(kerley, tube(x, y, pts, 0.006, 0.004))
        scene.dense += 0.06 * kerley * scene.lung
    return []


def paint_atelectasis(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Plate-like (discoid) band opacity at a base; volume loss was applied to the anatomy."""
    out = []
    for side in _sides(f):
        cx, cy = _place(scene, "atelectasis", side, rng, (0.68, 0.82), (-0.2, 0.3))
        length = _extent(scene, "atelectasis", rng, (0.20 + 0.10 * f.severity, 0.0), 1.0, 0.08, 0.35)[0]
        thick = 0.022 + 0.025 * f.severity
        band = ellipse(scene.x, scene.y, cx, cy, length, thick, 0.008, angle=float(rng.normal(0, 0.15)))
        _opacify(scene, (0.55 + 0.4 * f.severity) * band)
        out.append(("atelectasis", band * scene.lungs[side]))
    return out


def paint_nodule(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Small (<3 cm) well-defined round opacity."""
    side = f.side if f.side != BILATERAL else int(rng.integers(2))
    cx, cy = _place(scene, "nodule", side, rng, (0.15, 0.75))
    r = float(np.mean(_extent(scene, "nodule", rng, (0.05 + 0.03 * f.severity,) * 2, 1.0, 0.035, 0.12)))
    blob = ellipse(scene.x, scene.y, cx, cy, r, r * rng.uniform(0.85, 1.0), 0.006)
    _opacify(scene, (0.65 + 0.35 * f.severity) * blob)
    scene.dense += 0.06 * blob * scene.lung
    return [("nodule", blob * scene.lungs[side])]


def paint_mass(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Large (>3 cm) lobulated opacity."""
    side = f.side if f.side != BILATERAL else int(rng.integers(2))
    cx, cy = _place(scene, "mass", side, rng, (0.2, 0.7), (-0.3, 0.3))
    r = float(np.mean(_extent(scene, "mass", rng, (0.09 + 0.07 * f.severity,) * 2, 0.8, 0.07, 0.3)))
    lobes = ellipse(
        scene.x, scene.y, cx, cy, r, r * rng.uniform(0.75, 1.0), 0.01, angle=float(rng.uniform(0, 3))
    )
    for _ in range(2):
        lobes = np.maximum(
            lobes,
            ellipse(
                scene.x,
                scene.y,
                cx + rng.normal(0, r * 0.5),
                cy + rng.normal(0, r * 0.5),
                r * 0.6,
                r * 0.55,
                0.01,
            ),
        )
    _opacify(scene, (0.65 + 0.3 * f.severity) * lobes)
    scene.dense += 0.05 * lobes * scene.lung
    return [("mass", lobes * scene.lungs[side])]


def paint_emphysema(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Hyperlucent lungs with sparse markings and bullae; flat domes were set in the anatomy."""
    scene.marking_scale *= 1 - 0.6 * f.severity
    bullae = np.zeros_like(scene.x)
    for side in (0, 1):
        cx, cy = _point_in_lung(scene, side, rng, (0.05, 0.3))
        bullae = np.maximum(bullae, ellipse(scene.x, scene.y, cx, cy, 0.08, 0.07, 0.01))
    scene.extra_lucency += 0.05 * f.severity * bullae * scene.lung
    return []


def paint_fibrosis(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Reticular (net-like) peripheral and basal opacities."""
    h, w = scene.x.shape
    net = np.maximum(
        soft_step(0.08 - np.abs(smooth_noise(rng, h, w, 30)), 0.04),
        soft_step(0.08 - np.abs(smooth_noise(rng, h, w, 30)), 0.04),
    )
    zone = np.zeros_like(scene.x)
    for side in (0, 1):
        g = scene.lung_geometry[side]
        zone = np.maximum(
            zone, gaussian_blob(scene.x, scene.y, g["lateral"] * 0.9, g["dome"] - 0.15, 0.3, 0.35)
        )
    _opacify(scene, (0.25 + 0.3 * f.severity) * net * zone)
    return []


def paint_pleural_thickening(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Smooth soft-tissue band along the apical and lateral pleura."""
    out = []
    for side in _sides(f):
        g = scene.lung_geometry[side]
        inner = lung_mask(scene.x, scene.y, g, 0.01, shrink=0.93 - 0.05 * f.severity)
        band = np.clip(scene.lungs[side] - inner, 0, 1) * soft_step(g["cy"] - scene.y, 0.1)
        _opacify(scene, 0.9 * band)
        out.append(("pleural_thickening", band))
    return out


def paint_hernia(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Hiatal hernia: a retrocardiac round soft-tissue mass with an air-fluid level."""
    g = scene.lung_geometry[1]
    cx, cy = 0.05, g["dome"] - g["dome_height"] - 0.08
    r = 0.07 + 0.04 * f.severity
    sac = ellipse(scene.x, scene.y, cx, cy, r * 1.2, r, 0.01)
    scene.soft += 0.06 * sac
    air = sac * soft_step(cy - 0.2 * r - scene.y, 0.004)
    scene.extra_lucency += 0.10 * air
    return [("hernia", sac)]


def paint_fracture(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Healing rib fracture: a cortical step with a bright callus on a lateral rib."""
    side = f.side if f.side != BILATERAL else int(rng.integers(2))
    g = scene.lung_geometry[side]
    cx = g["lateral"] - SIDE_SIGN[side] * 0.10
    cy = float(rng.uniform(g["apex"] + 0.25, g["dome"] - 0.25))
    # a spindle of callus along the rib, cut by the dark fracture line
    callus = ellipse(
        scene.x, scene.y, cx, cy, 0.10 + 0.03 * f.severity, 0.04, 0.008, angle=-SIDE_SIGN[side] * 0.5
    )
    cleft = ellipse(scene.x, scene.y, cx, cy, 0.012, 0.06, 0.006, angle=-SIDE_SIGN[side] * 0.5)
    scene.dense += (0.28 + 0.12 * f.severity) * callus - 0.12 * cleft * callus
    return [("fracture", callus)]


def paint_support_devices(scene: Scene, f: Finding, rng: np.random.Generator) -> list[Lesion]:
    """Radio-opaque lines and tubes: ET tube, central venous line, NG tube, ECG leads, pacemaker."""
    x, y = scene.x, scene.y
    edge = 1.2 / x.shape[1]
    kinds = rng.choice(
        ["ett", "cvc", "ng", "ecg", "pacer"],
        size=int(rng.integers(1, 4)),
        replace=False,
        p=[0.25, 0.3, 0.15, 0.2, 0.1],
    )
    dense = np.zeros_like(x)
    for kind in kinds:
        if kind == "ett":
            tip = -0.42 + rng.normal(0, 0.04)
            pts = np.array([[0.0, -1.6], [0.0, tip]], F32)
            dense = np.maximum(dense, tube(x, y, pts, 0.016, edge) - tube(x, y, pts, 0.009, edge) * 0.6)
        elif kind == "cvc":
            sgn = SIDE_SIGN[int(rng.integers(2))]
            pts = np.array(
                [
                    [sgn * 0.62, -0.95],
                    [sgn * 0.30, -0.74],
                    [sgn * 0.08, -0.55],
                    [0.05 * sgn, -0.25 + rng.normal(0, 0.04)],
                ],
                F32,
            )
            dense = np.maximum(dense, tube(x, y, pts, 0.007, edge))
        elif kind == "ng":
            pts = np.array([[0.01, -1.6], [0.02, -0.2], [0.08, 0.35], [0.28, 0.62]], F32)
            dense = np.maximum(dense, 0.8 * tube(x, y, pts, 0.008, edge))
        elif kind == "ecg":
            for _ in range(3):
                ex, ey = rng.uniform(-0.6, 0.6), rng.uniform(-0.7, 0.3)
                ring = ellipse(x, y, ex, ey, 0.03, 0.03, edge) - 0.6 * ellipse(
                    x, y, ex, ey, 0.017, 0.017, edge
                )
                dense = np.maximum(dense, ring)
        else:  # pacemaker box in the left upper chest with a lead to the heart
            px, py = 0.45, -0.72
            dense = np.maximum(dense, ellipse(x, y, px, py, 0.09, 0.06, edge, power=4))
            pts = np.array([[px - 0.05, py], [0.15, -0.55], [0.05, -0.2], [0.12, 0.15]], F32)
            dense = np.maximum(dense, tube(x, y, pts, 0.006, edge))
    scene.dense += 0.45 * dense
    return []


PAINTERS: dict[str, Callable[[Scene, Finding, np.random.Generator], list[Lesion]]] = {
    "pleural_effusion": paint_effusion,
    "pneumothorax": paint_pneumothorax,
    "consolidation": paint_consolidation,
    "pneumonia": paint_pneumonia,
    "edema": paint_edema,
    "atelectasis": paint_atelectasis,
    "nodule": paint_nodule,
    "mass": paint_mass,
    "infiltration": paint_infiltration,
    "lung_opacity": lambda s, f, r: paint_infiltration(s, f, r, label="lung_opacity"),
    "emphysema": paint_emphysema,
    "fibrosis": paint_fibrosis,
    "pleural_thickening": paint_pleural_thickening,
    "hernia": paint_hernia,
    "fracture": paint_fracture,
    "support_devices": paint_support_devices,
}
"""Painters of the findings drawn as overlays (cardiomegaly and enlarged cardiomediastinum
are drawn only through the anatomy)."""

#: every finding the phantom can draw (harmonized names)
DRAWN_FINDINGS: tuple[str, ...] = ("cardiomegaly", "enlarged_cardiomediastinum", *PAINTERS)


def paint_findings(
    scene: Scene, findings: list[Finding], rng_for: Callable[[Finding], np.random.Generator]
) -> list[Lesion]:
    """Paint every finding onto ``scene``; returns the focal lesions (label, soft mask) drawn."""
    lesions: list[Lesion] = []
    for f in findings:
        if f.name == "cardiomegaly":
            lesions.append(("cardiomegaly", scene.heart))
        elif f.name in PAINTERS:
            lesions.extend(PAINTERS[f.name](scene, f, rng_for(f)))
    return lesions
