"""The typed configuration schema: one dataclass per section, a docstring under every field.

YAML files under ``pipelines/`` and dotted CLI overrides (``image.size=128``) are checked against these
dataclasses by ``mm_ray.config.load``; an unknown key or a value of the wrong type is an error that names
the dotted key.

Who gets what: the entry points (``build_cache``, ``fit``, ``sweep``, ``evaluate``, the CLI) and the wiring
below them (``mm_ray.data.pipeline``, ``mm_ray.train.spec``, ``mm_ray.modalities.registry``) take the whole
``Config``. A component takes only the typed section it needs (a decoder's settings such as ``ImageConfig``,
``PoolConfig`` for the resource plan, ``AugmentConfig`` for the batch augmenter, ``EncoderConfig`` for a
library encoder), or plain keyword arguments the wiring made from one (the preprocessors running in the actor
pools), never the whole ``Config`` and never a dict made from a section. ``as_dict`` is for what leaves the
process as data: a config written beside a run or into a checkpoint, printed, or sent to MLflow as params.

``mm-ray config show [FILE] [key=value ...]`` prints the resolved config; ``mm-ray config explain`` prints
every key with its docstring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Literal

ModalityName = str
"""A modality name: a built-in one (image, text, audio, features) or a plug-in's (``modalities.plugins``); checked
against the run's modalities before Ray starts (``mm_ray.modalities.modalities_of``), naming the key."""

FUSION_PRESET_NAMES = (
    "early",
    "late_concat",
    "additive",
    "gated",
    "fixed_weighted",
    "film",
    "tensor",
    "low_rank_tensor",
    "cross_transformer",
    "mvae",
    "cgan",
)
"""The model zoo's fusion presets (``mm_ray.models.FUSION_PRESETS``; a unit test keeps the two equal)."""

PresetName = str
"""A preset of the model zoo: a fusion preset (``FUSION_PRESET_NAMES``) or ``unimodal_<modality>`` for any
modality of the run; checked before Ray starts (``mm_ray.modalities.checked``), so ``model.preset=gatd`` fails on
the driver, naming the key."""

Precision = Literal["fp32", "bf16", "fp16"]
"""Forward-pass precision of training (``train.precision``)."""

Strategy = Literal["ddp", "fsdp"]
"""Data-parallel strategy of the Train workers (``train.strategy``)."""

TextEncoderName = Literal["transformer", "lstm"]
"""A text encoder (``mm_ray.models.TEXT_ENCODERS``)."""

RetrievalPair = str
"""A cross-modal retrieval direction ``QUERY->GALLERY`` between two modalities (``image->text``)."""


@dataclasses.dataclass(frozen=True)
class MembersConfig:
    """Which tar member extensions map to which modality (webdataset convention: ``<key>.<ext>``)."""

    image: list[str] = field(default_factory=lambda: ["jpg", "jpeg", "png", "webp"])
    """Extensions read as images (first match wins when a sample has several)."""
    text: list[str] = field(default_factory=lambda: ["txt"])
    """Extensions read as UTF-8 text."""
    audio: list[str] = field(default_factory=lambda: ["wav", "flac", "ogg", "mp3"])
    """Extensions read as audio (decoded by libsndfile)."""
    label: list[str] = field(default_factory=lambda: ["cls"])
    """Extensions holding the integer class label as ASCII."""
    features: list[str] = field(default_factory=lambda: ["npy"])
    """Extensions read as precomputed arrays (``.npy``; only with ``features`` among ``data.modalities``)."""
    json: list[str] = field(default_factory=lambda: ["json"])
    """Extensions parsed as a JSON object (text and/or label fields, img2dataset style)."""
    json_text_field: str = "caption"
    """JSON field used as the text when there is no text member."""
    json_label_field: str = "label"
    """JSON field used as the label when there is no label member."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the shards are and how samples are validated."""

    shards: list[str] = field(default_factory=list)
    """Shard specs: directories, globs, brace ranges (``shard-{000..009}.tar``), files, ``s3://`` URLs."""
    val_shards: list[str] = field(default_factory=list)
    """Held-out shard specs (validation); same forms as ``shards``."""
    members: MembersConfig = field(default_factory=MembersConfig)
    """Extension -> modality mapping."""
    modalities: list[ModalityName] | None = None
    """The modalities the pipeline reads, decodes and hands to the model (canonical order whatever the order
    here); None = image, text, audio and every plug-in (``modalities.plugins``). ``features`` is opt-in:
    ``data.modalities=[image,text,audio,features]``. Members of a modality not listed are ignored (noted)."""
    required_modalities: list[ModalityName] = field(default_factory=list)
    """Modalities a sample must have; others may be missing (kept with a presence mask)."""
    label_required: bool = True
    """Quarantine samples without a label (turn off for unlabeled data, e.g. embedding)."""
    labels: Literal["integer", "names"] = "integer"
    """integer: a label is a non-negative integer (the class id). names: a label is a string (a ``.cls``/``.txt``
    member holding ``cat``, or a JSON field such as ``members.json_label_field=category``), mapped to an id by
    its index in ``classes``; a string not in ``classes`` quarantines its sample as ``unknown_label``."""
    classes: list[str] = field(default_factory=list)
    """The class names of ``labels=names`` (id = position). Empty: built from the training shards (their
    distinct labels, sorted) by ``mm-ray preprocess`` / ``mm-ray train``, then saved in the cache manifest and
    in every checkpoint, which ``mm-ray evaluate`` / ``mm-ray embed`` reuse."""
    classes_from: str | None = None
    """A preprocessed cache (local or ``s3://``) whose class names to use (``labels=names``): preprocess the
    validation shards with the training cache's map, so both agree on the ids."""
    error_budget: float = 0.05
    """Largest tolerated fraction of quarantined samples; above it the run fails with a clear message."""
    max_member_bytes: int = 64 << 20
    """Largest tar member read (64 MiB), checked from its header before any byte is read; a larger one
    quarantines its sample as ``member_too_large``. Members no modality or label maps are never read."""
    max_sample_bytes: int = 256 << 20
    """Largest sample (its mapped members together, 256 MiB); above it: ``sample_too_large``."""
    fail_on_unreadable_shard: bool = False
    """Fail the run when any shard cannot be opened (otherwise it is reported by name and skipped)."""
    storage_options: dict[str, str] = field(default_factory=dict)
    """pyarrow S3FileSystem options for ``s3://`` shards (endpoint_override, scheme, region, ...)."""
    read_block_rows: int = 64
    """Samples per block emitted by a read task (smaller = smoother streaming, more overhead)."""
    memory_limit_mb: int | None = 1024
    """Object-store bytes the ingest may hold in flight (Ray Data backpressure); None = Ray's default."""


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What the model predicts (README "Multi-label and regression", ``mm_ray.tasks``): one class per sample
    (``classification``), a set of tags (``multilabel``) or one or more numbers (``regression``)."""

    kind: Literal["classification", "multilabel", "regression"] = "classification"
    """classification: one class id per sample (``data.labels``: integers or names), cross-entropy, accuracy.
    multilabel: a set of tag names per sample (a JSON list in ``data.members.json_label_field``, or a
    ``.cls``/``.txt`` label member split at ``separator``); the tags are ``data.classes`` (empty = the sorted
    union of the training shards' tags); BCE-with-logits; micro/macro F1 at ``threshold`` and mAP.
    regression: float targets (``targets``), standardised with the training set's mean/std; ``loss``;
    MAE, RMSE, R²."""
    targets: list[str] = field(default_factory=list)
    """regression: the JSON fields holding the targets, one output each (e.g. ``[age, price]``). Empty = one
    target: the number in the label member (``.cls``), else in the JSON field ``data.members.json_label_field``."""
    separator: str = ","
    """multilabel: what separates the tags in a label member (``dog,outdoor``); blanks around tags are stripped."""
    threshold: float = 0.5
    """multilabel: a tag is predicted when its probability (sigmoid) is at least this (F1, predictions)."""
    loss: Literal["mse", "huber"] = "mse"
    """regression: mean squared error, or Huber (``huber_delta``) on the standardised targets."""
    huber_delta: float = 1.0
    """regression: Huber's switch from squared to absolute error, in standard deviations of the target."""
    target_mean: list[float] = field(default_factory=list)
    """regression: the training set's mean of each target (filled by ``mm-ray preprocess``/``train`` from the
    training data, saved in the cache manifest and every checkpoint; set it to fix the standardisation)."""
    target_std: list[float] = field(default_factory=list)
    """regression: the training set's standard deviation of each target (as ``target_mean``)."""


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """Image decoding: decode -> RGB -> resize/crop -> uint8 CHW (normalisation happens on the device)."""

    size: int = 224
    """Output side length in pixels (square)."""
    resize: Literal["crop", "stretch", "pad"] = "crop"
    """crop: shorter side to ``size`` then centre crop; stretch: ignore aspect; pad: letterbox with zeros."""


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Tokenisation with a HF ``tokenizers`` WordPiece tokenizer."""

    tokenizer: str | None = None
    """Path to a ``tokenizer.json``; None trains one from the shards' captions (``mm-ray preprocess``)."""
    vocab_size: int = 4096
    """Vocabulary size when training a tokenizer."""
    max_length: int = 32
    """Tokens per sample after padding/truncation (includes [CLS] and [SEP])."""
    tokenizer_train_samples: int = 20000
    """At most this many captions are read to train a tokenizer."""
    max_caption_bytes: int = 65536
    """Longer captions (UTF-8 bytes) are quarantined as ``caption_too_long`` and left out of tokenizer
    training: a caption is a sentence or a paragraph, and a huge one would cost the tokenizer its memory."""


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Audio decoding: any rate/channels -> mono -> resample -> crop/pad -> log-mel (or MFCC).

    The demo keeps the default log-mel: its audio class is the pitch of a tone (300-3000 Hz), which a log-mel
    shows directly as one bright band that moves with the class. MFCCs describe the spectral envelope: the
    DCT spreads that narrow peak over every coefficient as a cosine pattern, and keeping only the first
    ``n_mfcc`` smooths away the fine structure that tells neighbouring pitches apart. Use MFCCs for speech-
    or timbre-like classes, where the envelope is the signal and pitch is a nuisance."""

    sample_rate: int = 16000
    """Target sample rate in Hz."""
    duration_s: float = 1.0
    """Clip length in seconds after crop/pad."""
    n_mels: int = 64
    """Mel bands."""
    n_fft: int = 400
    """FFT size in samples (25 ms at 16 kHz)."""
    hop_length: int = 160
    """Hop in samples (10 ms at 16 kHz)."""
    features: Literal["log_mel", "mfcc"] = "log_mel"
    """log_mel: ``[n_mels, frames]`` log-mel spectrogram; mfcc: its orthonormal DCT-II over the mel axis,
    ``[n_mfcc, frames]`` (``[3 * n_mfcc, frames]`` with ``deltas``). The model's input size follows."""
    n_mfcc: int = 20
    """MFCC coefficients kept (at most ``n_mels``; ``features=mfcc`` only)."""
    deltas: bool = True
    """Append deltas and delta-deltas (regression over +-2 frames) to the MFCCs (``features=mfcc`` only)."""


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """Precomputed arrays stored as ``.npy`` members (a CLIP embedding, a pose vector): read with
    ``numpy.load(allow_pickle=False)``, checked against ``shape`` and ``dtype`` (a mismatch quarantines the sample
    as ``bad_features``), handed to the model as float32."""

    shape: list[int] = field(default_factory=list)
    """The shape of one sample's array (e.g. ``[512]``); required with ``features`` among ``data.modalities``."""
    dtype: Literal["float32", "float16", "float64"] = "float32"
    """The dtype every member must have (cast to float32 for the model)."""


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """One modality's actor pool. Sizes left at None are derived from the cluster's CPUs."""

    num_cpus: float = 0.5
    """CPUs reserved per actor (fractional is fine: it is a scheduling budget, not a cap)."""
    num_gpus: float = 0.0
    """GPUs per actor."""
    min_size: int | None = None
    """Smallest pool size; None = derived from the cluster."""
    max_size: int | None = None
    """Largest pool size (autoscaling between min and max); None = same as min_size."""
    batch_size: int = 64
    """Samples per call of the preprocessor."""
    max_tasks_in_flight: int | None = None
    """Tasks Ray Data may queue on one actor (``max_tasks_in_flight_per_actor``); None = Ray Data's default (2).
    Measured on 2 cores (``mm-ray bench ingest``, 20,000 samples in 40 shards): 1 left the fused pool's actors
    idle between whole-shard tasks (c/d steady 0.84 against 1.05 with the default); 1 may still pay where a few
    long shards queue behind each other on a busy actor at an epoch's tail."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources per actor, to pin the pool to the nodes that declare them (e.g. ``{preprocess:
    0.001}`` with CPU nodes started with ``--resources='{"preprocess": 1}'``, as ``cluster/`` does). The pool is
    then sized from those nodes' CPUs; a resource no node declares fails naming this key. {} = any node."""


@dataclasses.dataclass(frozen=True)
class PoolsConfig:
    """Resources of the read tasks and of the preprocessing actor pools."""

    layout: Literal["auto", "per_modality", "fused"] = "auto"
    """per_modality: one actor pool per modality (``image``, ``text``, ``audio`` below), each sized on its own;
    fused: one pool (``fused`` below) whose actors run every modality's preprocessor in turn; auto: fused for
    the CPU stages, with a modality that asks for GPUs (``pools.<m>.num_gpus``) or for custom resources
    (``pools.<m>.resources``: pinned elsewhere) in a pool of its own. Fewer
    processes is faster where resources are uniform: on 2 cores six actor processes contend for the caches and
    each pays its own start-up (``mm-ray bench ingest`` measures both layouts)."""
    read_num_cpus: float = 0.25
    """CPUs reserved per shard-read task."""
    fused: PoolConfig = field(default_factory=lambda: PoolConfig(num_cpus=0.75))
    """The pool of the fused layout (every CPU modality in one actor)."""
    image: PoolConfig = field(default_factory=lambda: PoolConfig(num_cpus=0.3))
    """Image decode pool (the heaviest stage)."""
    text: PoolConfig = field(default_factory=lambda: PoolConfig(num_cpus=0.25))
    """Tokenizer pool (cheap)."""
    audio: PoolConfig = field(default_factory=lambda: PoolConfig(num_cpus=0.3))
    """Audio decode + log-mel pool."""
    features: PoolConfig = field(default_factory=lambda: PoolConfig(num_cpus=0.25))
    """``.npy`` feature pool (cheap)."""


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """How to reach Ray."""

    address: str | None = None
    """Cluster address (``auto``, ``ray://...``); None starts a local single-node Ray."""
    num_cpus: int | None = None
    """CPUs of a local Ray instance (None = all cores)."""
    object_store_memory_mb: int | None = None
    """Object store size of a local Ray instance (None = Ray's default)."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The generated demo benchmark (``mm-ray make-shards`` / ``mm-ray demo``)."""

    num_samples: int = 2000
    """Samples across train and val shards."""
    samples_per_shard: int = 250
    """Samples per tar shard."""
    val_fraction: float = 0.2
    """Fraction of samples written to held-out ``val-*`` shards."""
    seed: int = 0
    """Generation seed (same seed, same bytes)."""
    min_image_px: int = 256
    """Smallest rendered image side."""
    max_image_px: int = 512
    """Largest rendered image side."""
    features_dim: int = 0
    """The features variant: > 0 adds a ``<key>.npy`` member to every sample (a float32 vector of this length
    showing a fourth latent the label depends on; more than K) and the caps of all 15 modality subsets; 0 = the
    three-modality benchmark. Read it with ``data.modalities=[image,text,audio,features]
    features.shape=[<features_dim>]`` (``pipelines/features.yaml``)."""
    train_presets: list[PresetName] = field(default_factory=lambda: ["late_concat"])
    """Fusion presets ``mm-ray demo`` trains after preprocessing (``model``/``train`` settings, one run each under
    ``<run>/train/<preset>``), scored against the benchmark's caps; [] = stop after preprocessing."""
    sweep_presets: list[PresetName] = field(
        default_factory=lambda: ["late_concat", "film", "additive", "unimodal_image"]
    )
    """Presets of the small Ray Tune sweep ``mm-ray demo`` ends with (one trial each, ``train.lr`` sampled,
    ASHA; under ``<run>/sweep``); [] = no sweep. ``mm-ray tune`` runs the full search."""
    sweep_epochs: int = 3
    """Epochs of each demo sweep trial (ASHA may stop a trial after its first)."""
    sweep_samples: int | None = None
    """Training samples each demo sweep trial reads (the first ones of the cache); None = all."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """More training runs beside ``train_presets``: run name -> ``key=value`` overrides laid over the config
    (e.g. ``late_concat_aux: [train.aux_loss_weight=0.3]``); each trains under ``<run>/train/<name>`` and gets
    a row in the learning table, with its subset accuracies beside those of its preset's plain run."""
    ensemble: list[str] = field(default_factory=list)
    """Trained run names (presets or variants) whose predicted probabilities are averaged and scored on the
    val shards as one more row (model-level fusion; e.g. the three unimodal baselines); [] = none."""
    retrieval: list[str] = field(default_factory=list)
    """Trained run names whose val-shard embeddings are written (``mm-ray embed``) and scored for cross-modal
    retrieval (``embed.*``); [] = none."""


EncoderSource = Literal["builtin", "torchvision", "transformers"]
"""Where a modality's encoder comes from: mm_ray's own, a torchvision image model, a HF ``transformers`` model."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """One modality's encoder (``mm_ray.models.pretrained``): mm_ray's own (``builtin``, the default) or a model of
    an ecosystem library, built from files on local disk (nothing is ever downloaded), with a linear projection
    to ``model.fusion_dim`` so every preset takes it. Images: ``torchvision``; text and audio: ``transformers``."""

    source: EncoderSource = "builtin"
    """builtin: mm_ray's encoder (``model.width``/``depth``); torchvision: ``arch`` with the weights in ``path``
    (image only); transformers: the HF model directory ``path`` (text: a BERT-like encoder with its
    ``tokenizer.json``, which the text pool then uses; audio: an Audio Spectrogram Transformer on log-mels)."""
    arch: str | None = None
    """torchvision: the architecture (``torchvision.models.list_models()``: resnet18, efficientnet_b0, ...)."""
    path: str | None = None
    """torchvision: a state-dict file (``torch.save(model.state_dict(), F)``; None = random init), or an mm_ray run
    directory / checkpoint whose image encoder is the same torchvision ``arch`` (its backbone); transformers: a
    directory with ``config.json`` and ``model.safetensors`` (``save_pretrained``, ``huggingface-cli download
    --local-dir``). Read when training starts; checkpoints hold the weights, so evaluation never needs it."""
    pool: Literal["default", "avg", "cls", "mean"] = "default"
    """How the backbone's outputs become one vector: avg (torchvision's own global pooling; its default); cls (the
    first token; AST: its pooler, the mean of its two leading tokens); mean (masked mean over tokens / patches;
    the default for transformers)."""
    freeze: bool = False
    """Keep the backbone's weights fixed (its BatchNorm statistics too); the projection still trains."""
    unfreeze_after: int | None = None
    """With ``freeze``: train this many epochs frozen, then unfreeze at the start of the next; None = frozen for
    the whole run."""
    mean: list[float] | None = None
    """Image normalisation mean per RGB channel (torchvision only); None = ImageNet's, as torchvision's weights."""
    std: list[float] | None = None
    """Image normalisation std per RGB channel (torchvision only); None = ImageNet's."""


@dataclasses.dataclass(frozen=True)
class EncodersConfig:
    """Per-modality encoder choice (``model.encoders.image.source=torchvision`` ...); unset = mm_ray's own. A
    plug-in modality always uses its spec's encoder."""

    image: EncoderConfig = field(default_factory=EncoderConfig)
    """The image encoder (``torchvision`` or ``builtin``)."""
    text: EncoderConfig = field(default_factory=EncoderConfig)
    """The text encoder (``transformers`` or ``builtin``)."""
    audio: EncoderConfig = field(default_factory=EncoderConfig)
    """The audio encoder (``transformers`` or ``builtin``)."""
    features: EncoderConfig = field(default_factory=EncoderConfig)
    """The features encoder (``builtin`` only: an MLP)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The fusion model: a named preset (``mm_ray.models.PRESETS``) plus a few size knobs."""

    preset: PresetName = "late_concat"
    """Fusion preset name (late_concat, early, gated, film, tensor, low_rank_tensor, ...)."""
    modalities: list[ModalityName] | None = None
    """Modalities the model uses, among ``data.modalities`` (None = all of them; unimodal presets keep only their
    own)."""
    width: int = 64
    """Encoder width: image/audio CNN base channels, text transformer size (cost grows with its square)."""
    depth: int = 2
    """Encoder depth: stride-2 CNN stages / transformer layers."""
    fusion_dim: int = 64
    """Each encoder's output size and the fusion's hidden size."""
    rank: int = 4
    """Rank of the low-rank tensor fusion (``low_rank_tensor`` only)."""
    dropout: float = 0.0
    """Dropout inside the text encoder and the fusion head."""
    modality_dropout: float = 0.0
    """Per-sample probability of hiding each present modality while training (robustness to missing ones)."""
    subset_dropout: float = 0.0
    """Per-sample probability of showing the model, while training, only a non-empty proper subset of the sample's
    modalities, drawn uniformly (with three modalities each of the six proper subsets gets ``p / 6``): one model
    then scores near every subset's cap (the learning table's "every subset" verdict)."""
    subset_dropout_after: int = 0
    """Epochs trained on every modality before ``subset_dropout`` starts: a fusion first learns the cross-modal
    interaction from whole samples, then to do without each modality (``pipelines/subsets.yaml``)."""
    num_classes: int | None = None
    """Output classes; None = one more than the largest label in the training (and validation) cache."""
    text_encoder: TextEncoderName = "transformer"
    """Text encoder: transformer (masked mean pool) or lstm (embedding -> LSTM -> attention pooling)."""
    bidirectional: bool = True
    """Whether the LSTM text encoder reads both directions (``text_encoder=lstm`` only)."""
    fusion_weights: dict[ModalityName, float] = field(default_factory=dict)
    """Relative per-modality weights of the ``fixed_weighted`` preset (e.g. ``{text: 2.0, audio: 0.5}``); an
    unnamed modality weighs 1.0; per sample they are renormalised over the modalities present."""
    align_dim: int = 64
    """Size of the shared space the alignment projections map into (``train.align_loss_weight`` > 0 only)."""
    builder: str | None = None
    """Your own model instead of ``preset``: ``package.module:function``, called with the input sizes as
    keyword arguments (``modalities``, ``num_classes``, ``image_size``, ``vocab_size``, ``n_mels``,
    ``max_text_len``) plus ``builder_kwargs``, returning an ``nn.Module`` that maps a batch of model-ready
    columns to logits ``[B, num_classes]`` (``mm_ray.models.builder``). The module must be importable on every
    node. Checkpoints record it; ``mm-ray evaluate``/``embed`` import it only when given the same
    ``model.builder`` (a checkpoint is data: the code it names is not run on its word alone)."""
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of ``builder`` (e.g. ``{hidden: 32}``); searchable as
    ``model.builder_kwargs.<name>`` in a Tune space."""
    vae_beta: float = 1.0
    """KL weight of the ``mvae`` preset's ELBO (its reconstruction terms are per-element mean squared errors, so
    small values, 0.01-0.1, keep the latent informative); ``mvae`` uses ``fusion_dim`` as its latent size."""
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    """Encoders from torchvision / HF transformers per modality, built from local files (README "Pretrained
    encoders"); unset = mm_ray's own encoders, as before."""


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation of the model-ready batches (``mm_ray.preprocess.augment``); validation batches
    are never augmented. Each sample draws its own parameters; a range ``x`` means a factor in ``[1-x, 1+x]``.

    Hue is never changed and rotations stay small: in the demo images the background colour carries the topic,
    and a square turned by 45 degrees is the diamond shape. Every demo shape is mirror-symmetric, so flips keep
    its meaning."""

    enabled: bool = False
    """Augment the training batches (off: the batches reach the model exactly as cached)."""
    crop_min_scale: float = 0.6
    """Random resized crop: smallest crop area as a fraction of the image (1.0 = no crop)."""
    crop_max_aspect: float = 1.333
    """Random resized crop: aspect ratios are drawn log-uniformly from ``[1/x, x]`` (1.0 = square crops)."""
    flip: float = 0.5
    """Probability of a horizontal flip (0 = never)."""
    rotate_degrees: float = 10.0
    """Largest rotation either way, in degrees (0 = none); done in the same warp as the crop."""
    brightness: float = 0.2
    """Brightness jitter: pixels scaled by a factor in ``[1-x, 1+x]`` (0 = off)."""
    contrast: float = 0.2
    """Contrast jitter: distance from the image's mean grey scaled by a factor in ``[1-x, 1+x]`` (0 = off)."""
    saturation: float = 0.2
    """Saturation jitter: distance from each pixel's grey scaled by a factor in ``[1-x, 1+x]`` (0 = off)."""
    gain_db: float = 6.0
    """Audio gain drawn from ``[-x, x]`` dB: a constant added to every log-mel band (0 = off)."""
    time_shift: float = 0.1
    """Audio frames rolled by up to this fraction of the clip, either way (0 = off)."""
    at_decode: bool = True
    """Training straight from the shards (``data.shards``, no ``train.cache``): draw the random resized crop in
    the image pool while decoding, cut from the full-resolution source (sharper than warping the resized
    image; the batch augmentation then skips its crop), and start a clip longer than ``audio.duration_s`` at a
    random offset in the audio pool. New draws every epoch (the pools are made anew each epoch). From a cache,
    decoded once, the crop stays a batch augmentation."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training on Ray Train: data, optimisation, workers, checkpoints."""

    cache: str | None = None
    """Preprocessed cache directory (``mm-ray preprocess --out DIR``) to train on; None = stream
    ``data.shards`` through the ingest actor pools every epoch (``model.num_classes`` then required)."""
    val_cache: str | None = None
    """Preprocessed cache used for per-epoch validation; None = no validation."""
    epochs: int = 10
    """Passes over the training cache (a resumed run continues up to this many)."""
    samples_per_epoch: int | None = None
    """Streaming from shards: samples per epoch, for the LR schedule's length; None = the first shard's count
    times the number of shards."""
    limit_samples: int | None = None
    """Train on the first this many samples of the training data only (quick sweeps, smoke runs); None = all."""
    shuffle: bool = True
    """Shuffle the training data every epoch, seeded by ``seed`` and the epoch: the blocks' order, then rows
    through a local buffer (``shuffle_buffer``). Off, every epoch sees the rows in the order they were written."""
    shuffle_buffer: int = 2048
    """Rows in each worker's local shuffle buffer (memory: rows x row size; 0 = block order only)."""
    one_execution: bool = True
    """Streaming from shards with one Train worker: one Ray Data execution reads every epoch, so the decoding
    actors start once per run (each epoch still in its own seeded shard order, cut exactly, resumable at its
    epoch: ``mm_ray.train.epoch_stream``). false = one execution per epoch, whose actors start anew each time.
    Several workers, ``limit_samples`` and the per_modality layout always read one execution per epoch (Ray's
    equal split across workers is made per execution)."""
    batch_size: int = 64
    """Samples per optimizer step on each worker."""
    lr: float = 1e-3
    """Peak learning rate (AdamW), reached at the end of the warm-up."""
    lr_by_modality: dict[ModalityName, float] = field(default_factory=dict)
    """Per-modality encoder learning rates (e.g. ``{text: 1e-4}``) to damp a dominant modality."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay (capped at the run's total steps)."""
    grad_clip: float = 1.0
    """Clip the total gradient norm to this value (0 = off)."""
    seed: int = 0
    """Seed of the model's initial weights and of every worker's RNGs."""
    num_workers: int = 1
    """Ray Train workers (data-parallel); 0 = local mode in the driver: no checkpoints kept, no resume."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float = 0.5
    """CPUs reserved per worker; keep it below 1 on small nodes so Ray Data still gets CPUs to feed them."""
    worker_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources per worker, to pin the workers to the nodes that declare them (e.g. ``{train_gpu:
    0.001}`` with GPU nodes started with ``--resources='{"train_gpu": 1}'``, as ``cluster/`` does); the ingest
    pools then keep the workers' CPUs free on those nodes only. A resource no node declares fails naming this
    key. {} = any node."""
    checkpoints_to_keep: int = 2
    """Most recent checkpoints kept on storage."""
    max_failures: int = 0
    """Worker-group failures Ray Train recovers from, restarting from the last checkpoint. Opt-in: at 0 a
    failure ends the run (a bug is not retried); set 1-3 for preemptible or flaky nodes (-1 = forever)."""
    storage_path: str | None = None
    """Where runs and checkpoints are stored (local path or URI); None = ``output_dir``."""
    bf16: bool = False
    """bfloat16 autocast for forward passes on GPU workers (ignored on CPU); kept for older configs:
    ``precision`` says the same for every device."""
    precision: Precision = "fp32"
    """Forward-pass precision. fp32; bf16: bfloat16 autocast on GPU and on CPU (no loss scaling needed);
    fp16: float16 autocast with a ``torch.amp.GradScaler`` (GPUs without bf16; needs ``use_gpu``). The loss
    and the optimizer stay in float32 either way."""
    grad_accum_steps: int = 1
    """Micro-batches of ``batch_size`` per optimizer step: the effective batch is ``batch_size`` x this x
    ``num_workers``. Gradients are synchronised across workers on the last micro-batch only (DDP ``no_sync``);
    the LR schedule, ``checkpoint_every_steps`` and the step counts count optimizer steps."""
    compile: bool = False
    """``torch.compile`` the model in each worker (after DDP/FSDP wrapping); checkpoints keep the plain
    state dict; validation runs the module eagerly. The first steps pay the compilation (60-90 s for the
    demo model on 2 CPU cores). Off by default: on CPU it did not pay off (a convolution-bound model; README
    "Large runs"); measure yours with ``mm-ray bench train --modes eager,compiled``."""
    strategy: Strategy = "ddp"
    """Data parallelism: ddp replicates the model on every worker (gradients all-reduced); fsdp shards
    parameters, gradients and optimizer state across the workers with FSDP2 (``fully_shard`` on each encoder,
    then the whole model): for encoders too large to replicate. Checkpoints hold full state dicts either
    way, so a run resumes under the other strategy or another worker count and ``mm-ray evaluate`` loads it
    in one process."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many optimizer steps (0 = at epoch ends only), with the exact data
    position: the samples already trained this epoch (by id) and, streaming, the shards done. A resumed run
    or a restarted worker group (``max_failures``) continues mid-epoch without repeating or skipping a
    sample. Not in sweeps (Tune would count every report as an epoch)."""
    sample_log: str | None = None
    """Audit: a local directory where every worker appends the ids of the samples it trains on, one JSON
    line per optimizer step (``mm_ray.data.sample_ids`` says how an id is made from shard and key). None =
    off."""
    torch_threads: int | None = None
    """Intra-op threads of torch in each worker; None = what Ray sets from ``cpus_per_worker`` (at least 1).
    More threads than reserved CPUs pay off when nothing else runs beside training (a cache kept in memory on
    a small machine); they compete with the preprocessing pools when training streams from shards."""
    prefetch_batches: int | None = None
    """Batches each worker's Ray Data iterator prepares ahead in a background thread. None = 1 on GPU workers
    (host work overlaps the device's), 0 on CPU workers: there that thread competes with torch's intra-op
    threads for the worker's cores (``mm-ray bench train`` measures the difference)."""
    subset_eval_every: int = 1
    """Score every modality subset on ``val`` every this many epochs and at the last one; the other epochs
    score all modalities only (one pass instead of seven). 0 = the last epoch only."""
    fail_at_epoch: int = 0
    """Fault drill: in a run started from scratch, rank 0's process dies half-way through this epoch, after
    its first training step (>= 2; 0 = off). With ``max_failures`` >= 1 the run restarts from the last
    checkpoint and finishes."""
    fail_at_step: int = 0
    """Fault drill: in a run started from scratch, rank 0's process dies right after this optimizer step
    (counted over epochs; 0 = off); the restarted attempt passes it. Pair with ``checkpoint_every_steps`` and
    ``max_failures`` to see a mid-epoch restart."""
    aux_loss_weight: float = 0.0
    """Multi-task weight λ (0 = off): adds one linear head per modality and λ x the sum of their
    cross-entropies, each over the samples where its modality is present, to the fused loss."""
    align_loss_weight: float = 0.0
    """Weight of the cross-modal contrastive loss (0 = off): a symmetric InfoNCE between the projected
    embeddings of every pair of modalities (``model.align_dim``), over the samples holding both."""
    align_temperature: float = 0.07
    """Temperature of that contrastive loss (CLIP's initial value): lower sharpens it onto hard negatives."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Train-time augmentation (off by default); searchable as ``train.augment.*``."""


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Fusion architecture search with Ray Tune (``mm-ray tune``): every trial is a Ray Train run of up to
    ``train.epochs`` epochs on ``train.cache``, with its model and optimiser keys sampled from the search space;
    the rest of the config (and each trial's workers) is the same for all trials."""

    space: str | None = None
    """Search space YAML: dotted ``model.*``/``train.*`` keys -> ``{choice|uniform|loguniform|randint: ...}``,
    optionally ``when:`` (``mm_ray/tune/space.py``); required here or as ``mm-ray tune --space``."""
    num_samples: int = 8
    """Trials sampled from the space."""
    searcher: Literal["random", "optuna"] = "random"
    """random: Tune's random search; optuna: Optuna's TPE, a model-based searcher (conditional keys included)."""
    scheduler: Literal["asha", "fifo"] = "asha"
    """asha: stop trials that trail the others at a rung early (ASHA); fifo: every trial runs all its epochs."""
    metric: str | None = None
    """Per-epoch metric that ranks trials (val_* metrics need ``train.val_cache``); None = the task's headline:
    ``val_accuracy`` (classification), ``val_map`` (multilabel), ``val_r2`` (regression)."""
    mode: Literal["max", "min"] | None = None
    """Whether a higher or a lower ``metric`` is better; None = the headline metric's (or ``max``)."""
    grace_period: int = 1
    """ASHA: epochs every trial trains before it may be stopped (at most ``train.epochs``)."""
    reduction_factor: int = 2
    """ASHA: of the trials reaching a rung, the best 1/reduction_factor go on; the rungs are
    grace_period x reduction_factor^k epochs."""
    max_concurrent_trials: int | None = None
    """Trials running at once; None = as many as the cluster's CPUs/GPUs hold (``mm_ray/tune/resources.py``)."""
    driver_cpus: float = 0.25
    """CPUs reserved per trial for its driver (the Tune function that starts the Train run and its ingest)."""
    data_cpus: float = 1.0
    """CPUs kept free of trials for Ray Data's cache-read tasks (each needs one whole CPU)."""
    storage_path: str | None = None
    """Where the experiment (``<storage>/<name>``) and its trials' Train runs are stored; None = ``output_dir``."""
    seed: int = 0
    """Searcher seed: the same seed and space give the same trial configurations."""
    retry_errored: bool = False
    """On ``--resume``, run errored trials again from scratch (otherwise they stay errored)."""


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """``mm-ray embed``: per-modality embeddings of a shard set from a checkpoint, and cross-modal retrieval."""

    batch_size: int = 256
    """Samples per call of the embedding actors."""
    actors: int = 1
    """Embedding actors (each holds one copy of the model)."""
    num_cpus: float = 0.5
    """CPUs reserved per embedding actor (kept back from the preprocessing pools)."""
    num_gpus: float | None = None
    """GPUs per embedding actor; None = 1 when the cluster has GPUs, else 0 (CPU)."""
    gallery_size: int = 1000
    """Samples per retrieval gallery (the "1K test set" protocol): recall@k's chance is k / gallery_size."""
    pairs: list[RetrievalPair] = field(default_factory=lambda: ["image->text", "audio->text"])
    """Retrieval directions scored, QUERY->GALLERY."""
    ks: list[int] = field(default_factory=lambda: [1, 5])
    """The k of each recall@k."""


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """``mm-ray predict``: batch inference of a checkpoint over shards (labels not needed), written as Parquet."""

    replicas: int = 1
    """Model replicas: actors each holding one copy of the model, fed by the preprocessing pools."""
    batch_size: int = 256
    """Samples per call of a replica."""
    num_cpus: float = 0.5
    """CPUs reserved per replica (kept back from the preprocessing pools)."""
    num_gpus: float | None = None
    """GPUs per replica; None = 1 when the cluster has GPUs, else 0 (CPU)."""
    embedding: bool = False
    """Also write each sample's fused embedding (the input of the fusion's classifier head) as ``embedding``."""


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    """Experiment tracking of ``mm-ray train`` and ``mm-ray tune`` runs in TensorBoard and MLflow.

    Both are written by the driver (the process that runs ``mm-ray train`` / ``mm-ray tune``; the head node
    for a submitted job) as each epoch's metrics arrive, so a local log directory or file store only needs to
    be on the driver's disk, not shared with the worker nodes."""

    tensorboard: bool = True
    """Write TensorBoard event files: ``mm-ray train`` to ``<output_dir>/<name>/tensorboard`` (per-epoch
    metrics, the config as text, the curves image, the best checkpoint's path), ``mm-ray tune`` to every
    trial's directory of the experiment (Ray Tune's ``TBXLoggerCallback``). View: ``tensorboard --logdir DIR``."""
    mlflow: str | None = None
    """MLflow tracking URI; None = off. A server (``http://HOST:5000``), a database (``sqlite:///mlflow.db``)
    or a local file store (``file:./mlruns`` or a plain path, resolved on the driver). Needs the ``[track]``
    extra (``pip install 'mm-ray[track]'``). Credentials come from MLflow's environment variables
    (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), never from the URI: one with
    ``user:password@`` is refused, and that part is dropped from every saved or printed config."""
    experiment: str = "mm-ray"
    """MLflow experiment of ``mm-ray train`` runs (one MLflow run per run ``name``; a resumed run continues
    it), of sweeps (one parent run per sweep ``name``, its trials' runs nested under it) and of ``mm-ray export
    --mlflow``."""


@dataclasses.dataclass(frozen=True)
class ModalitiesConfig:
    """Modalities from outside mm_ray (README "Your own modality"): a ``ModalitySpec`` in your own package, used
    like a built-in one. Its settings, member extensions and pool live here, under its name."""

    plugins: list[str] = field(default_factory=list)
    """``package.module:NAME`` of each plug-in ``ModalitySpec``, imported wherever mm_ray runs (install the
    package, or ship it in the job's working_dir). Only from your own config or command line: a checkpoint or
    a sweep that names a plug-in is refused unless you name the same."""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Plug-in name -> its settings (checked against the spec's ``settings_type``), e.g.
    ``modalities.settings.depth.size=64``."""
    extensions: dict[str, list[str]] = field(default_factory=dict)
    """Plug-in name -> the member extensions read as it (default: the spec's own)."""
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    """Plug-in name -> its own actor pool's settings (``pools.layout=per_modality``; default: the spec's CPUs)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration of an mm_ray run."""

    name: str = "mm-ray"
    """Run name: outputs go to ``<output_dir>/<name>``; reusing a name resumes/overwrites that run."""
    output_dir: str = "runs"
    """Root directory for run outputs."""
    data: DataConfig = field(default_factory=DataConfig)
    """Input shards and validation."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """What is predicted: classification, multi-label tags or regression targets."""
    image: ImageConfig = field(default_factory=ImageConfig)
    """Image preprocessing."""
    text: TextConfig = field(default_factory=TextConfig)
    """Text preprocessing."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Audio preprocessing."""
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    """Precomputed-array (``.npy``) members."""
    modalities: ModalitiesConfig = field(default_factory=ModalitiesConfig)
    """Plug-in modalities."""
    pools: PoolsConfig = field(default_factory=PoolsConfig)
    """Actor pools and read tasks."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray connection."""
    demo: DemoConfig = field(default_factory=DemoConfig)
    """Demo data generation."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The fusion model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training on Ray Train."""
    tune: TuneConfig = field(default_factory=TuneConfig)
    """Architecture search with Ray Tune."""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    """Embeddings and cross-modal retrieval (``mm-ray embed``)."""
    predict: PredictConfig = field(default_factory=PredictConfig)
    """Batch inference over shards (``mm-ray predict``)."""
    track: TrackConfig = field(default_factory=TrackConfig)
    """Experiment tracking (TensorBoard, MLflow) of training runs and sweeps."""
