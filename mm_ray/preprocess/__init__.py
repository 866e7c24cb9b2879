"""Per-modality preprocessors: plain classes (no Ray) that turn raw member bytes into model-ready arrays."""
