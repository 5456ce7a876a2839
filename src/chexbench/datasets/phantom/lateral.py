"""The lateral view (CheXpert layout): the same patient seen from the side.

Patient faces image left (anterior = left). Both lungs superimpose into one field between
the sternum (anterior) and the spine (posterior); the heart sits anterior-inferior; the
posterior costophrenic sulcus is the lowest point of the lungs. The scene exposes the same
layers as the frontal one, with both "sides" mapped to that one field, so every finding
painter works unchanged (side 0 leans anterior, side 1 posterior).
"""

from __future__ import annotations

import numpy as np

from chexbench.datasets.phantom.anatomy import Anatomy, Pose, Scene, lung_mask, posed_grid
from chexbench.datasets.phantom.fields import ellipse, smooth_noise, soft_step, tube


def draw_lateral(anat: Anatomy, pose: Pose, height: int, width: int) -> Scene:
    """The normal chest of ``anat`` in a left lateral projection, as layers."""
    x, y = posed_grid(height, width, pose)
    edge = 1.2 / (width * pose.zoom)
    rng = np.random.default_rng(anat.noise_seed + 1)
    depth = 0.50 + 0.2 * (anat.thorax_half_width - 0.76)  # anteroposterior half-depth of the thorax
    dome = max(anat.dome_y) + pose.inspiration + 0.05 - (1 - min(anat.lung_scale)) * 0.5
    g = {
        "cx": -0.05,
        "cy": anat.apex_y - 0.05 + 0.7 * (dome - anat.apex_y),
        "a": depth,
        "b": 0.7 * (dome - anat.apex_y),
        "dome": dome,
        "dome_height": 0.18,
        "apex": anat.apex_y,
        "lateral": depth,
    }
    field = lung_mask(x, y, g, edge * 2)
    # the anterior diaphragm is higher than the posterior sulcus
    field = field * soft_step(dome - 0.12 * (1 - x / depth) - y, edge * 2)

    heart_r = anat.ctr * anat.thorax_half_width * 0.95
    heart = ellipse(
        x,
        y,
        -depth + heart_r * 0.95,
        dome - 0.2 - heart_r * 0.35,
        heart_r,
        heart_r * 0.85,
        edge * 2,
        angle=0.5,
    )
    heart = heart * soft_step(dome + 0.02 - y, 0.03)
    body = ellipse(x, y, 0.05, 0.2, depth + 0.36, 1.5, edge * 3, power=4.0)

    # thoracic spine behind the lungs: vertebral bodies separated by darker disc spaces
    spine_x = depth - 0.05 + 0.13 - 0.10 * (y + 0.1) ** 2
    vertebra = soft_step(0.36 - np.abs(((y / 0.11) % 1.0) - 0.5), 0.06)
    spine = soft_step(0.09 - np.abs(x - spine_x), edge * 2) * (0.45 + 0.55 * vertebra)
    sternum = tube(
        x,
        y,
        np.array([[-depth - 0.08, anat.apex_y + 0.1], [-depth - 0.05, dome - 0.25]], np.float32),
        0.025,
        edge,
    )
    ribs = 0.04 * soft_step(np.cos(2 * np.pi * (y - 0.6 * x) / (anat.rib_spacing * 1.2)) - 0.6, 0.2) * field
    bones = ribs + 0.16 * spine + 0.12 * sternum

    ridge = np.clip(1.0 - np.abs(smooth_noise(rng, height, width, 16)) * 0.9, 0, 1) ** 3
    hilum = (0.05, -0.05)
    rh = np.hypot(x - hilum[0], y - hilum[1])
    markings = ridge * np.exp(-rh / 0.35) + 0.8 * np.exp(-((rh / 0.10) ** 2))

    zeros = np.zeros_like(x)
    return Scene(
        x=x,
        y=y,
        anatomy=anat,
        body=body,
        lungs=(field, field),
        heart=heart,
        mediastinum=zeros.copy(),
        bones=bones.astype(np.float32),
        markings=markings.astype(np.float32),
        opacity=zeros.copy(),
        marking_scale=np.ones_like(x),
        extra_lucency=zeros.copy(),
        dense=zeros.copy(),
        soft=zeros.copy(),
        hilum=(hilum, hilum),
        lung_geometry=[g, g],
    )
