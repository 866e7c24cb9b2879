"""After training: batch inference over shards (``predict``), a model exported for programs without mm_ray
(``export``, ``load_exported``) and an HTTP deployment of an export (``serving``, the ``serve`` extra).

    mm_ray.predict("runs/demo", ["shards/new-*.tar"], out="s3://bucket/predictions")
    mm_ray.export("runs/demo", "exports/demo", formats=("torchscript",))
    exported = mm_ray.load_exported("exports/demo")     # the model without Ray and without the checkpoint
"""
