"""A model replica: the plain callable class that Ray Data runs as the ``predict`` actor pool.

    replica = CheckpointPredictor(ckpt, device="cpu", embedding=False, threads=1)
    out = replica(batch)   # numpy batch of model-ready columns -> __key__, __shard__, the prediction columns

Ray stays out of it (``mm_ray.inference.predict`` sets the resources where ``map_batches`` is called), so the
plain-loop baseline of ``mm-ray bench predict`` runs the very same class in one process.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from mm_ray.columns import KEY, SHARD
from mm_ray.inference.outputs import EMBEDDING, fused_embeddings, prediction_columns


class CheckpointPredictor:
    """The checkpoint's model (``LoadedCheckpoint.restore_model``: under the trust the caller gave it on opening),
    scoring batches with the run's own autocast. ``threads``: torch's intra-op threads in this process (a Ray
    worker may have imported numpy/torch before Ray capped its threads: set here, where it is known)."""

    def __init__(
        self, checkpoint: Any, device: str = "cpu", embedding: bool = False, threads: int = 0
    ) -> None:
        import torch

        from mm_ray.train.autocast import scoring_dtype

        if threads:
            torch.set_num_threads(threads)
        loop = checkpoint.loop
        self.device = torch.device(device)
        self.model = checkpoint.restore_model(self.device)
        self.autocast = scoring_dtype(loop.precision, self.device, legacy_bf16=loop.bf16)
        self.classes = checkpoint.classes
        self.task = loop.resolved.task
        self.embedding = embedding
        if embedding:
            with fused_embeddings(self.model):  # a fusion without a single head fails here, before any data
                pass

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from mm_ray.train.autocast import autocast_context
        from mm_ray.train.loop import to_device

        hook = fused_embeddings(self.model) if self.embedding else contextlib.nullcontext({})
        with torch.inference_mode(), autocast_context(self.device, self.autocast), hook as captured:
            logits = self.model(to_device(batch, self.device))
        out = {KEY: batch[KEY], SHARD: batch[SHARD], **prediction_columns(logits, self.classes, self.task)}
        if self.embedding:
            out[EMBEDDING] = captured[EMBEDDING].float().cpu().numpy()
        return out
