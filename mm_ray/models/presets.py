"""Named fusion presets and the builder that turns flat keyword arguments into a ``FusionModel``.

    model = build_model("low_rank_tensor", modalities=("image", "audio"), num_classes=10,
                        shapes={"image": (3, 64, 64), "audio": (64, 101)}, rank=8)

``PRESETS`` maps each name to its fusion family; Tune searches over these names plus a few
scalars (width, depth, fusion_dim, rank, dropout, modality_dropout, subset_dropout). ``unimodal_<m>`` exists for
every modality ``m`` (plug-ins too) and uses only its own modality (the others named in ``modalities`` are ignored,
as a baseline should). Each modality's encoder is its spec's (``mm_ray.modalities``), built from the model-ready
``shapes`` of its columns (the data's: a cache manifest's ``shapes``).
``early`` gives the joint network shallow features: stem-only encoders (``depth=0``) and a joint MLP
``depth + 1`` layers deep. The same seed gives the same initial weights, whatever the global RNG.

Options that cut across presets: ``text_encoder="lstm"`` swaps the text transformer for a (bi-)LSTM with
attention pooling; ``aux_heads=True`` adds one linear classifier per modality and ``align_dim > 0`` one
projection per modality into a shared space (the extra losses in ``mm_ray.models.objectives``);
``fusion_weights`` sets the constant per-modality weights of ``fixed_weighted``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mm_ray.modalities.legacy import SIZE_FIELDS, shapes_from_sizes
from mm_ray.modalities.registry import BUILTIN, UNIMODAL_PREFIX, Registry
from mm_ray.modalities.spec import EncoderContext, ModalitySpec
from mm_ray.models import fusion as F
from mm_ray.models.model import FusionModel
from mm_ray.models.pretrained.encoder_spec import EncoderSpec


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named architecture: the fusion family, and the only modality for unimodal baselines."""

    family: str
    only: str | None = None
    shallow: bool = False
    description: str = ""


def unimodal(modality: str) -> Preset:
    """The baseline preset of one modality: its encoder and an MLP head."""
    return Preset("concat", only=modality, description=f"{modality} encoder + MLP head")


FUSION_PRESETS: dict[str, Preset] = {
    "early": Preset("early", shallow=True, description="shallow features concatenated, deep joint MLP"),
    "late_concat": Preset("concat", description="encoder outputs concatenated, MLP head"),
    "additive": Preset("additive", description="per-modality heads, logits averaged over present"),
    "gated": Preset("gated", description="softmax weights over modalities, weighted sum, MLP head"),
    "fixed_weighted": Preset(
        "fixed_weighted", description="weighted sum with fixed weights (model.fusion_weights), MLP head"
    ),
    "film": Preset("film", description="each modality scaled/shifted by the others (FiLM)"),
    "tensor": Preset("tensor", description="outer product of [1; h_m] (TFN), MLP head"),
    "low_rank_tensor": Preset("low_rank_tensor", description="rank-R factorized tensor fusion (LMF)"),
    "cross_transformer": Preset("cross_transformer", description="one token per modality + CLS transformer"),
    "mvae": Preset(
        "mvae", description="multimodal VAE: product-of-experts posterior, image/audio decoders, classifier"
    ),
    "cgan": Preset("cgan", description="conditional GAN text -> image, beside a text classifier"),
}

PRESETS: dict[str, Preset] = {f"{UNIMODAL_PREFIX}{m}": unimodal(m) for m in BUILTIN.names} | FUSION_PRESETS
"""Every preset of the built-in modalities: one unimodal baseline each, then the fusion families."""


def preset_named(name: str, registry: Registry = BUILTIN) -> Preset:
    """The preset ``name``: a fusion family, or ``unimodal_<m>`` for a modality of ``registry``; ``ValueError``
    listing the known ones otherwise."""
    if name in FUSION_PRESETS:
        return FUSION_PRESETS[name]
    modality = name.removeprefix(UNIMODAL_PREFIX)
    if name.startswith(UNIMODAL_PREFIX) and modality in registry:
        return unimodal(modality)
    known = [f"{UNIMODAL_PREFIX}{m}" for m in registry.names] + list(FUSION_PRESETS)
    raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(known)}")


def only_modality(name: str) -> str | None:
    """The one modality of a unimodal preset's name (``unimodal_image`` -> ``image``); None for a fusion preset."""
    if name in FUSION_PRESETS or not name.startswith(UNIMODAL_PREFIX):
        return None
    return name.removeprefix(UNIMODAL_PREFIX)


GENERATIVE_FAMILIES = ("mvae", "cgan")
"""Families whose models can generate one modality from others (``model.generates``, ``model.generate``)."""


# Encoder sizes to pass through as ``build_model(..., **ENCODER_SIZES["wide"])``. Cost grows with
# width squared (conv channels); depth adds stride-2 stages (image/audio) or transformer layers (text).
ENCODER_SIZES: dict[str, dict[str, int]] = {
    "small": {"width": 32, "depth": 1},
    "base": {"width": 64, "depth": 2},  # the defaults
    "wide": {"width": 128, "depth": 2},
    "deep": {"width": 64, "depth": 4},
}

TEXT_ENCODERS = ("transformer", "lstm")


def build_model(
    preset: str,
    *,
    modalities: Sequence[str],
    num_classes: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    vocab_size: int = 0,
    registry: Registry = BUILTIN,
    width: int = 64,
    depth: int = 2,
    fusion_dim: int = 64,
    rank: int = 4,
    tensor_dim: int = 16,
    dropout: float = 0.0,
    modality_dropout: float = 0.0,
    subset_dropout: float = 0.0,
    seed: int = 0,
    text_encoder: str = "transformer",
    bidirectional: bool = True,
    fusion_weights: Mapping[str, float] | None = None,
    aux_heads: bool = False,
    align_dim: int = 0,
    vae_beta: float = 1.0,
    encoders: Mapping[str, EncoderSpec] | None = None,
    load_pretrained: bool = True,
    **sizes: int,
) -> nn.Module:
    """Build preset ``preset`` for ``modalities`` (a non-empty subset of ``registry``'s).

    ``shapes``: the per-row shape of every model-ready column of those modalities (a cache manifest's
    ``shapes``); the old size arguments (``image_size``, ``max_text_len``, ``n_mels``, ``audio_frames``) are still
    taken in their place. ``vocab_size``: the tokenizer's, for modalities that tokenize. ``width``/``depth`` size
    the encoders (the image CNN's base channels and stride-2 blocks, the text transformer's or LSTM's layers, the
    audio CNN's, the features MLP's); ``fusion_dim`` is each encoder's output size and the fusion's hidden size;
    ``rank`` is LMF's rank; ``tensor_dim`` the per-modality size before TFN's outer product ((tensor_dim + 1) ** M
    features: keep it small). ``text_encoder`` is ``transformer`` or ``lstm`` (``bidirectional`` for the
    latter). ``fusion_weights`` (``fixed_weighted`` only): relative weight per modality, 1.0 for those not
    named. ``aux_heads`` adds a linear head per modality; ``align_dim`` > 0 adds a projection per modality to that
    size (only with 2+ modalities: alignment needs a pair). ``mvae`` (``mm_ray.models.mvae``) uses ``fusion_dim``
    as its latent size and ``vae_beta`` as its KL weight (its audio decoder needs the audio frames in
    ``shapes``); ``cgan`` (``mm_ray.models.cgan``) needs image and text. ``encoders``: modality -> the spec of an
    encoder from a library (``mm_ray.models.pretrained``) used instead of mm_ray's own; ``load_pretrained=False``
    builds those with random weights (a checkpoint's weights are loaded over them).
    """
    unknown_sizes = sorted(set(sizes) - set(SIZE_FIELDS))
    if unknown_sizes:
        raise TypeError(f"build_model() got unexpected keyword arguments {unknown_sizes}")
    shapes = {**shapes_from_sizes(**sizes), **{c: tuple(v) for c, v in (shapes or {}).items()}}
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"unknown text_encoder {text_encoder!r}; known: {', '.join(TEXT_ENCODERS)}")
    spec = preset_named(preset, registry)
    chosen = _resolve_modalities(preset, spec, modalities, registry)
    weights = _fusion_weights(fusion_weights, chosen, registry)
    options = {"text_encoder": text_encoder, "bidirectional": bidirectional}
    library = _library_encoders(encoders or {}, [m.name for m in chosen], fusion_dim, seed, load_pretrained)

    def encoder(m: ModalitySpec, enc_depth: int) -> nn.Module:
        if m.name in library:
            return library[m.name]
        lacking = [c for c in m.column_names if c not in shapes]
        if lacking:
            raise ValueError(
                f"build_model: no shape for {m.name}'s columns {lacking} (shapes={sorted(shapes)})"
            )
        context = EncoderContext(
            shapes={c: shapes[c] for c in m.column_names}, out_dim=fusion_dim, width=width, depth=enc_depth,
            dropout=dropout, vocab_size=vocab_size, options=options,
        )  # fmt: skip
        return m.encoder(context)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.family in GENERATIVE_FAMILIES:
            enc = {m.name: encoder(m, depth) for m in chosen}
            return _generative(spec.family, chosen, enc, fusion_dim, num_classes, shapes, width, vae_beta)
        names = tuple(m.name for m in chosen)
        encoders = {m.name: encoder(m, 0 if spec.shallow else depth) for m in chosen}
        fusion = _fusion(
            spec.family, names, fusion_dim, num_classes, depth, rank, tensor_dim, dropout, weights
        )
        # From their own random streams, so turning them on changes no other initial weight of a seed.
        heads = _linears(names, fusion_dim, num_classes, seed + 1) if aux_heads else None
        align = align_dim > 0 and len(chosen) > 1
        projections = _linears(names, fusion_dim, align_dim, seed + 2) if align else None
        return FusionModel(
            specs=chosen,
            encoders=encoders,
            fusion=fusion,
            dim=fusion_dim,
            modality_dropout=modality_dropout,
            subset_dropout=subset_dropout,
            aux_heads=heads,
            projections=projections,
        )


def _generative(
    family: str,
    specs: tuple[ModalitySpec, ...],
    encoders: dict[str, nn.Module],
    dim: int,
    num_classes: int,
    shapes: Mapping[str, tuple[int, ...]],
    width: int,
    beta: float,
) -> nn.Module:
    # Imported here: the fusion presets need none of the generative code.
    from mm_ray.models.cgan import build_cgan
    from mm_ray.models.mvae import build_mvae

    if family == "mvae":
        return build_mvae(specs, encoders, dim=dim, latent_dim=dim, num_classes=num_classes, shapes=shapes,
                          width=width, beta=beta)  # fmt: skip
    return build_cgan(specs, encoders, dim=dim, num_classes=num_classes, shapes=shapes, width=width)


def _library_encoders(
    specs: Mapping[str, EncoderSpec], chosen: tuple[str, ...], dim: int, seed: int, load: bool
) -> dict[str, nn.Module]:
    """The chosen modalities' encoders from torchvision / transformers (none: {}, and nothing imported). Built
    from their own random streams, so mm_ray's own encoders keep the initial weights of the seed."""
    wanted = [m for m in chosen if m in specs]
    if not wanted:
        return {}
    from mm_ray.models.pretrained.backbones import build_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        return {m: build_encoder(m, specs[m], out_dim=dim, load_weights=load) for m in wanted}


def _linears(modalities: tuple[str, ...], dim: int, out: int, seed: int) -> dict[str, nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {m: nn.Linear(dim, out) for m in modalities}


def _fusion_weights(
    weights: Mapping[str, float] | None, chosen: tuple[ModalitySpec, ...], registry: Registry
) -> dict[str, float]:
    weights = dict(weights or {})
    names = [m.name for m in chosen]
    unknown = sorted(set(weights) - set(registry.names))
    if unknown:
        raise ValueError(f"fusion_weights names {unknown}, not modalities (expected {registry.names})")
    resolved = {m: float(weights.get(m, 1.0)) for m in names}
    if any(w < 0 for w in resolved.values()) or not any(w > 0 for w in resolved.values()):
        raise ValueError(f"fusion_weights must be >= 0 with at least one > 0, got {resolved}")
    return resolved


def _resolve_modalities(
    preset: str, spec: Preset, modalities: Sequence[str], registry: Registry
) -> tuple[ModalitySpec, ...]:
    unknown = [m for m in modalities if m not in registry]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {registry.names}, got {list(modalities)}")
    if spec.only is None:
        return tuple(registry.only(modalities))
    if spec.only not in modalities:
        raise ValueError(f"preset {preset!r} needs modality {spec.only!r}, got {list(modalities)}")
    return (registry[spec.only],)


def _fusion(
    family: str,
    modalities: tuple[str, ...],
    dim: int,
    num_classes: int,
    depth: int,
    rank: int,
    tensor_dim: int,
    dropout: float,
    weights: dict[str, float],
) -> nn.Module:
    common = {
        "modalities": modalities,
        "dim": dim,
        "hidden": dim,
        "num_classes": num_classes,
        "dropout": dropout,
    }
    if family == "concat":
        return F.ConcatFusion(**common)
    if family == "early":
        # The encoders are shallow, so the depth goes into the joint network instead.
        return F.ConcatFusion(**common, layers=depth + 1)
    if family == "additive":
        return F.AdditiveFusion(**common)
    if family == "gated":
        return F.GatedFusion(**common)
    if family == "fixed_weighted":
        return F.FixedWeightedFusion(**common, weights=weights)
    if family == "film":
        return F.FiLMFusion(**common)
    if family == "tensor":
        return F.TensorFusion(**common, tensor_dim=tensor_dim)
    if family == "low_rank_tensor":
        return F.LowRankTensorFusion(**common, rank=rank)
    return F.CrossTransformerFusion(**common, depth=max(1, depth))
