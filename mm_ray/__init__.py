"""mm_ray: multimodal (image + text + audio) fusion training on Ray.

The package is layered so data flows one way::

    shards -> mm_ray.data (reader, quarantine) -> mm_ray.preprocess (per-modality
    preprocessors) -> Ray Data actor pools (mm_ray.data.pipeline) -> cache / trainer

Everything under ``mm_ray.preprocess``, ``mm_ray.demo`` and the pure parts of
``mm_ray.data`` is plain Python and can be used without Ray.
"""

__version__ = "0.1.0"
