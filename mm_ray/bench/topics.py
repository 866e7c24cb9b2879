"""Reading a demo image's topic back, and the diversity of generated samples: the measures of
``mm-ray bench generate``. Pure numpy.

    topics = colour_topics(images, num_topics=4)    # uint8/float images [N, 3, S, S] -> topic ids [N]
    spread = pairwise_distance(draws)                # [N, ...] samples of one caption -> mean pairwise L2

In the demo benchmark the image's background is the topic's palette colour (``mm_ray.demo.render_image``), and
one grey shape sits somewhere in the image, never covering more than about half of its border. So the
per-channel median of the image's one-pixel border ring is the background colour, and the nearest palette
colour (in RGB) is the topic the image shows. On real demo images this reads the rendered colour back almost
perfectly (the benchmark reports it), which is what makes it a fair judge of generated ones.
"""

from __future__ import annotations

import numpy as np

from mm_ray.demo.render_image import PALETTE


def border_colour(images: np.ndarray) -> np.ndarray:
    """Per-channel median of the one-pixel border of each image ``[N, 3, H, W]`` -> ``[N, 3]`` (same scale)."""
    images = np.asarray(images, dtype=np.float64)
    ring = np.concatenate(
        [images[:, :, 0, :], images[:, :, -1, :], images[:, :, 1:-1, 0], images[:, :, 1:-1, -1]], axis=2
    )
    return np.median(ring, axis=2)


def colour_topics(images: np.ndarray, num_topics: int) -> np.ndarray:
    """The topic each image ``[N, 3, H, W]`` shows: the palette colour nearest its border colour.

    ``images`` are uint8 ``[0, 255]`` or float ``[0, 1]`` (a float array with a maximum <= 1 is scaled up).
    Only the first ``num_topics`` palette colours are candidates (the benchmark's K topics).
    """
    images = np.asarray(images)
    scale = 255.0 if images.dtype.kind == "f" and images.max() <= 1.0 else 1.0
    colours = border_colour(images) * scale  # [N, 3]
    palette = np.array([rgb for _, rgb in PALETTE[:num_topics]], dtype=np.float64)  # [K, 3]
    distance = ((colours[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)
    return distance.argmin(axis=1)


def pairwise_distance(samples: np.ndarray) -> float:
    """Mean L2 distance over every pair of the ``N`` samples (``[N, ...]``, any shape after the first axis),
    divided by the square root of the number of values: a root-mean-square difference per value."""
    flat = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    if len(flat) < 2:
        raise ValueError("pairwise distance needs at least two samples")
    sq = (flat**2).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    upper = np.triu_indices(len(flat), k=1)
    return float(np.sqrt(d2[upper]).mean() / np.sqrt(flat.shape[1]))
