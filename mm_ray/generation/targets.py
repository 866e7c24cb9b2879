"""What cross-modal generation can produce, and from what by default (light: the CLI reads it for ``-h``)."""

from mm_ray.modalities.audio import AUDIO
from mm_ray.modalities.image import IMAGE
from mm_ray.modalities.text import TEXT

TARGETS = (IMAGE.name, AUDIO.name)
"""What the generative presets decode (``mvae``: either; ``cgan``: images)."""
DEFAULT_SOURCES = (TEXT.name,)
"""What ``mm-ray generate`` conditions on unless ``--from`` says otherwise."""
