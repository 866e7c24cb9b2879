"""The fusion model zoo: fusion families as named presets over the modalities' encoders, per-modality
optimizer groups.

    from mm_ray.models import build_model, param_groups

    model = build_model("gated", modalities=("image", "text", "audio"), num_classes=10,
                        shapes=cache.shapes, vocab_size=8192)      # or image_size=64, n_mels=64, max_text_len=32
    # or, as checkpoints store it: ModelSpec(preset="gated", ...).build()
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, lr_by_modality={"text": 3e-4}))
    logits = model(batch)  # batch: dict of the data plane's model-ready columns as tensors

    # Extra objectives: build with aux_heads=True and/or align_dim=32, then
    total, fused = training_loss(model(batch, with_aux=True), labels, aux_weight=0.3, align_weight=0.1)

Pure PyTorch: nothing here imports Ray.
"""

from mm_ray.encoders import AudioEncoder, FeaturesEncoder, ImageEncoder, LSTMTextEncoder, TextEncoder
from mm_ray.models.groups import param_groups
from mm_ray.models.model import FusionModel, ModelOutput, drop_modalities, drop_to_subsets
from mm_ray.models.objectives import training_loss
from mm_ray.models.presets import (
    ENCODER_SIZES,
    FUSION_PRESETS,
    PRESETS,
    TEXT_ENCODERS,
    Preset,
    build_model,
    preset_named,
)
from mm_ray.models.spec import ModelSpec

__all__ = [
    "ENCODER_SIZES",
    "FUSION_PRESETS",
    "PRESETS",
    "TEXT_ENCODERS",
    "AudioEncoder",
    "FeaturesEncoder",
    "FusionModel",
    "ImageEncoder",
    "LSTMTextEncoder",
    "ModelOutput",
    "ModelSpec",
    "Preset",
    "TextEncoder",
    "build_model",
    "drop_modalities",
    "drop_to_subsets",
    "param_groups",
    "preset_named",
    "training_loss",
]
