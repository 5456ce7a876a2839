"""Procedural chest anatomy: per-patient shape parameters and the frontal (PA/AP) scene.

Units are normalized image coordinates (``x`` in [-1, 1] across the width, ``y`` downward,
0 at mid-height). Side index 0 is the *image left* = the patient's right (radiographic
convention), side 1 the image right = patient left, where the heart and gastric bubble lie.

The scene is built in two stages so findings can act like disease does:
1. :class:`Anatomy` parameters (cardiothoracic ratio, dome levels, mediastinal width, lung
   extent) — findings such as cardiomegaly or atelectasis change these *before* drawing;
2. layers of the drawn :class:`Scene` (lung air, opacity, lung markings, dense overlays) —
   focal findings and devices are painted onto these afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from chexbench.datasets.phantom.fields import (
    F32,
    coordinate_grid,
    ellipse,
    smooth_noise,
    soft_step,
)

SIDE_SIGN = (-1.0, 1.0)  # side 0 = image left (patient right), side 1 = image right (patient left)


@dataclass(frozen=True)
class Anatomy:
    """Shape parameters of one patient's chest (persist across that patient's studies)."""

    thorax_half_width: float  # inner rib margin at the widest point
    apex_y: float  # lung apices
    dome_y: tuple[float, float]  # lowest point of each hemidiaphragm (costophrenic level)
    dome_height: float  # how far each dome arches up
    mediastinum_half_width: float
    ctr: float  # cardiothoracic ratio: heart width / thoracic width (normal < 0.5)
    rib_spacing: float
    rib_phase: float
    clavicle_y: float
    body_half_width: float
    female: bool
    lung_scale: tuple[float, float] = (1.0, 1.0)  # <1: volume loss / collapse of that lung
    lucency: float = 0.0  # hyperinflation darkening (emphysema)
    noise_seed: int = 0


def sample_anatomy(rng: np.random.Generator, female: bool) -> Anatomy:
    """A normal chest with per-patient variation (habitus, dome levels, heart size)."""
    tw = float(rng.uniform(0.70, 0.82))
    dome_right = float(rng.uniform(0.36, 0.46))
    return Anatomy(
        thorax_half_width=tw,
        apex_y=float(rng.uniform(-0.78, -0.68)),
        dome_y=(dome_right, dome_right + float(rng.uniform(0.02, 0.07))),
        dome_height=float(rng.uniform(0.10, 0.15)),
        mediastinum_half_width=float(rng.uniform(0.11, 0.14)),
        ctr=float(rng.uniform(0.38, 0.47)),
        rib_spacing=float(rng.uniform(0.125, 0.145)),
        rib_phase=float(rng.uniform(0, 1)),
        clavicle_y=float(rng.uniform(-0.80, -0.72)),
        body_half_width=tw + float(rng.uniform(0.10, 0.20)),
        female=female,
        noise_seed=int(rng.integers(2**31)),
    )


@dataclass(frozen=True)
class Pose:
    """Per-study acquisition geometry: zoom (>1 enlarges anatomy), shift, rotation, inspiration."""

    zoom: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation: float = 0.0  # radians
    inspiration: float = 0.0  # >0 lowers the domes (deeper breath)


def sample_pose(rng: np.random.Generator, zoom: float, jitter: float) -> Pose:
    return Pose(
        zoom=zoom * float(rng.uniform(1 - 0.05 * jitter, 1 + 0.05 * jitter)),
        shift_x=float(rng.normal(0, 0.03 * jitter)),
        shift_y=float(rng.normal(0, 0.04 * jitter)),
        rotation=float(rng.normal(0, 0.03 * jitter)),
        inspiration=float(rng.normal(0, 0.03)),
    )


@dataclass
class Scene:
    """Drawn layers of one frontal image; all arrays are float32 (H, W)."""

    x: np.ndarray
    y: np.ndarray
    anatomy: Anatomy
    body: np.ndarray
    lungs: tuple[np.ndarray, np.ndarray]  # soft mask of each lung field
    heart: np.ndarray
    mediastinum: np.ndarray
    bones: np.ndarray  # additive brightness of ribs, clavicles, spine
    markings: np.ndarray  # vascular lung markings, >= 0
    opacity: np.ndarray  # fraction of lung air replaced by fluid/tissue, in [0, 1]
    marking_scale: np.ndarray  # 1 = normal markings, 0 = none (pneumothorax rim)
    extra_lucency: np.ndarray  # >= 0, darkening of free air (pneumothorax)
    dense: np.ndarray  # additive brightness of radio-opaque objects (devices, calcified)
    soft: np.ndarray  # additive soft-tissue brightness outside the lungs (hernia, masses)
    hilum: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    lung_geometry: list[dict[str, float]] = field(default_factory=list)
    lung_depth: np.ndarray | None = None  # relative lung thickness, (H, W) in [0, 1]

    @property
    def lung(self) -> np.ndarray:
        return np.maximum(self.lungs[0], self.lungs[1])

    def lung_side(self, side: int) -> np.ndarray:
        return self.lungs[side]


def posed_grid(height: int, width: int, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    x, y = coordinate_grid(height, width)
    c, s = np.cos(pose.rotation), np.sin(pose.rotation)
    xr = (c * x - s * y) / pose.zoom - pose.shift_x
    yr = (s * x + c * y) / pose.zoom - pose.shift_y
    return xr.astype(F32), yr.astype(F32)


def lung_geometry(anat: Anatomy, side: int, inspiration: float = 0.0) -> dict[str, float]:
    """Centre, semi-axes and dome of one lung field (normalized units)."""
    sgn = SIDE_SIGN[side]
    scale = anat.lung_scale[side]
    lateral = anat.thorax_half_width * 0.97
    medial = anat.mediastinum_half_width * 0.9
    dome = anat.dome_y[side] + inspiration
    apex = anat.apex_y
    # volume loss: the dome rises and the lateral margin moves in
    dome = dome - (1 - scale) * 0.9 * (dome - apex)
    lateral = medial + (lateral - medial) * (0.85 + 0.15 * scale)
    a = (lateral - medial) / 2
    b = 0.75 * (dome - apex)
    return {
        "cx": sgn * (lateral + medial) / 2,
        "cy": apex + b,
        "a": a,
        "b": b,
        "dome": dome,
        "dome_height": anat.dome_height * (0.6 + 0.4 * scale),
        "apex": apex,
        "lateral": sgn * lateral,
    }


def lung_mask(
    x: np.ndarray,
    y: np.ndarray,
    g: dict[str, float],
    edge: float,
    shrink: float = 1.0,
    with_depth: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Soft lung field: an ellipse (boxier towards the base) cut by the diaphragm dome.

    With ``with_depth`` also returns the relative lung thickness along the beam, in [0, 1]
    (0 at the pleural margin, 1 in the middle of the field).
    """
    u = np.abs((x - g["cx"]) / (g["a"] * shrink))
    v = (y - g["cy"]) / (g["b"] * shrink)
    av = np.abs(v)
    r = np.where(v > 0, np.cbrt(u**3 + av**3), np.sqrt(u * u + av * av))
    inside = soft_step((1.0 - r) * g["a"], edge)
    below = dome_curve(x, g) - y
    mask = inside * soft_step(below, edge)
    if not with_depth:
        return mask
    depth = np.sqrt(np.clip(np.minimum(1.0 - r, below * (1.0 / g["a"])) * 2.5, 0.0, 1.0))
    return mask, depth.astype(F32)


def dome_curve(x: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Height of the hemidiaphragm at ``x``: highest over the lung centre, lowest laterally."""
    t = np.clip((x - g["cx"]) / g["a"], -1.2, 1.2)
    return g["dome"] - g["dome_height"] * (1 - t * t)


def draw_frontal(anat: Anatomy, pose: Pose, height: int, width: int) -> Scene:
    """The normal chest of ``anat`` seen PA/AP, as layers (no findings yet)."""
    x, y = posed_grid(height, width, pose)
    edge = 1.2 / (width * pose.zoom)  # about one pixel of anti-aliasing
    rng = np.random.default_rng(anat.noise_seed)

    geoms = [lung_geometry(anat, s, pose.inspiration) for s in (0, 1)]
    drawn = [lung_mask(x, y, g, edge * 2, with_depth=True) for g in geoms]
    lungs = (drawn[0][0], drawn[1][0])
    lung_depth = np.maximum(drawn[0][1], drawn[1][1])
    heart, mediastinum, above_diaphragm = _heart_and_mediastinum(x, y, anat, geoms, edge)
    body = ellipse(x, y, 0.0, 0.25, anat.body_half_width, 1.5, edge * 3, power=4.0)
    bones = _bones(x, y, anat, geoms, edge, mediastinum)
    hila = ((-0.17, -0.08), (0.19, -0.06))
    markings = _vascular_markings(x, y, rng, height, width, hila)

    zeros = np.zeros_like(x)
    scene = Scene(
        x=x,
        y=y,
        anatomy=anat,
        body=body,
        lungs=lungs,
        heart=heart * above_diaphragm,
        mediastinum=mediastinum * above_diaphragm,
        bones=bones.astype(F32),
        markings=markings.astype(F32),
        opacity=zeros.copy(),
        marking_scale=np.ones_like(x),
        extra_lucency=zeros.copy(),
        dense=zeros.copy(),
        soft=zeros.copy(),
        hilum=hila,
        lung_geometry=geoms,
        lung_depth=lung_depth,
    )
    if anat.female:
        for sgn in SIDE_SIGN:
            scene.soft += 0.05 * ellipse(x, y, sgn * 0.45, geoms[0]["dome"] - 0.02, 0.33, 0.22, 0.06)
    # gastric bubble under the left hemidiaphragm (image right)
    g1 = geoms[1]
    scene.extra_lucency += (
        0.10 * ellipse(x, y, g1["cx"] + 0.05, g1["dome"] + 0.10, 0.11, 0.06, edge * 3) * body
    )
    return scene


def _heart_and_mediastinum(
    x: np.ndarray, y: np.ndarray, anat: Anatomy, geoms: list[dict[str, float]], edge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heart, mediastinum (heart, great vessels, aortic knob) and the soft mask of what lies
    above the diaphragm."""
    tw = anat.thorax_half_width
    dome_mid = 0.5 * (geoms[0]["dome"] + geoms[1]["dome"]) - 0.6 * anat.dome_height
    heart_hw = anat.ctr * tw
    heart_hh = 0.62 * heart_hw + 0.07
    # the heart sits on the diaphragm: below the dome tops its border merges with the liver
    heart = ellipse(
        x, y, 0.30 * heart_hw, dome_mid - 0.45 * heart_hh, heart_hw, heart_hh, edge * 2, angle=-0.30
    )
    above_diaphragm = soft_step(dome_mid + 0.02 - y, 0.03)
    mw = anat.mediastinum_half_width
    upper = soft_step(dome_mid - 0.3 * heart_hh - y, edge * 4)
    mediastinum = np.maximum(soft_step(mw - np.abs(x - 0.01), edge * 2) * upper, heart)
    aortic_knob = ellipse(x, y, mw + 0.015, -0.36, 0.065, 0.055, edge * 2)
    mediastinum = np.maximum(mediastinum, aortic_knob)
    return heart, mediastinum, above_diaphragm


def _bones(
    x: np.ndarray,
    y: np.ndarray,
    anat: Anatomy,
    geoms: list[dict[str, float]],
    edge: float,
    mediastinum: np.ndarray,
) -> np.ndarray:
    """Ribs (dimmed behind the mediastinum), clavicles and spine."""
    tw = anat.thorax_half_width
    # ribs: posterior arcs (bright) and fainter anterior ribs sloping down medially
    ax = np.abs(x)
    rib_zone = soft_step(tw * 1.04 - ax, edge * 3) * soft_step(y - (anat.apex_y - 0.12), edge * 3)
    rib_zone = rib_zone * soft_step(max(g["dome"] for g in geoms) + 0.15 - y, 0.03)
    t_post = (y + 0.45 * ax - 0.75 * x * x) / anat.rib_spacing + anat.rib_phase
    posterior = soft_step(np.cos(2 * np.pi * t_post) - 0.45, 0.25)
    t_ant = (y - 0.45 * ax + 0.25 * x * x) / (anat.rib_spacing * 1.25) + anat.rib_phase * 0.7
    anterior = soft_step(np.cos(2 * np.pi * t_ant) - 0.55, 0.2) * soft_step(ax - 0.25, 0.05)
    ribs = rib_zone * (0.075 * posterior + 0.035 * anterior) * soft_step(ax - 0.06, edge * 3)

    # clavicles: slender bones rising laterally from the sternal notch
    half_len = 0.5 * (tw - 0.02)
    clavicles = np.maximum(
        *(
            ellipse(
                x,
                y,
                sgn * (0.07 + half_len),
                anat.clavicle_y - 0.04,
                half_len,
                0.026,
                edge * 1.5,
                angle=-sgn * 0.16,
                power=2.4,
            )
            for sgn in SIDE_SIGN
        )
    )

    vertebra = 0.85 + 0.15 * np.cos(2 * np.pi * (y / 0.105))
    spine = soft_step(0.075 - ax, edge * 2) * vertebra
    return ribs * (1 - 0.6 * mediastinum) + 0.16 * clavicles + 0.06 * spine


def _vascular_markings(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    height: int,
    width: int,
    hila: tuple[tuple[float, float], ...],
) -> np.ndarray:
    """Vascular markings: ridged noise, densest at the hila and fading to the periphery."""
    ridge = 1.0 - np.abs(smooth_noise(rng, height, width, 18)) * 0.9
    ridge = np.clip(ridge, 0, 1) ** 3
    rh = np.minimum(np.hypot(x - hila[0][0], y - hila[0][1]), np.hypot(x - hila[1][0], y - hila[1][1]))
    return ridge * np.exp(-rh / 0.35) + 0.6 * np.exp(-((rh / 0.09) ** 2))


def compose(scene: Scene) -> np.ndarray:
    """Brightness in [0, 1] (before the site's detector curve): air dark, bone and fluid bright."""
    a = scene.anatomy
    x = scene.x
    lung = scene.lung
    thickness = 0.40 + 0.20 * np.clip(1 - (x / a.body_half_width) ** 2, 0, 1)
    base = scene.body * thickness + scene.soft
    air = lung * (1 - scene.opacity) * (1 - 0.80 * scene.heart) * (1 - 0.65 * scene.mediastinum)
    # thicker lung (more air) away from the pleural margins
    depth = 0.55 + 0.45 * (scene.lung_depth if scene.lung_depth is not None else lung)
    air_depth = (0.40 + a.lucency) * depth
    img = base - air_depth * air
    img += 0.14 * scene.markings * scene.marking_scale * lung * (1 - scene.opacity) * (1 - 0.8 * scene.heart)
    img += 0.12 * np.maximum(scene.heart, scene.mediastinum)
    img += scene.bones * scene.body * (1 - 0.4 * scene.opacity)
    img -= scene.extra_lucency
    img += scene.dense
    return np.clip(img, 0.0, 1.0).astype(F32)


def with_changes(anat: Anatomy, **changes: object) -> Anatomy:
    """A copy of ``anat`` with some parameters changed (e.g. by a finding)."""
    return replace(anat, **changes)
