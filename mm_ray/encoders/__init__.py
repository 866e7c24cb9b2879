"""The built-in unimodal encoders (pure PyTorch): each maps one modality's model-ready columns to ``[B, dim]``.

A modality's spec (``mm_ray.modalities``) names its default encoder; the fusion models (``mm_ray.models``) take
one encoder per modality and know nothing of what they encode.
"""

from mm_ray.encoders.builtin import AudioEncoder, FeaturesEncoder, ImageEncoder, LSTMTextEncoder, TextEncoder

__all__ = ["AudioEncoder", "FeaturesEncoder", "ImageEncoder", "LSTMTextEncoder", "TextEncoder"]
