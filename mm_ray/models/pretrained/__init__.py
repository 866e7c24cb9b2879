"""Encoders from the ecosystem's libraries, by config: torchvision image models and HF ``transformers`` text
(BERT-like) and audio (Audio Spectrogram Transformer) models, built from local files, never downloaded.

    mm-ray train ... model.encoders.image.source=torchvision model.encoders.image.arch=resnet18 \\
        model.encoders.image.path=resnet18.pt model.encoders.image.freeze=true model.encoders.image.unfreeze_after=2

- ``resolve``: ``model.encoders`` -> checked, self-contained specs (driver side; what checkpoints store).
- ``backbones``: ``build_encoder(modality, spec, out_dim=...)`` -> a ``PretrainedEncoder`` (``FusionModel``
  takes it like its own encoders: ``[B, fusion_dim]`` out).
- ``encoder``: the projection and the freeze / unfreeze schedule (``apply_epoch`` at each epoch's start).
- ``libraries``: lazy, offline imports: ``import mm_ray`` imports neither library.
"""

from mm_ray.models.pretrained.encoder import PretrainedEncoder, apply_epoch

__all__ = ["PretrainedEncoder", "apply_epoch"]
