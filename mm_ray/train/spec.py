"""``LoopConfig``: the typed, frozen contract between the driver, the Train workers and the checkpoints.

    loop = LoopConfig.for_run(cfg, shapes=cache.shapes, vocab_size=4096, num_classes=4, rows=4800,
                              has_val=True, preprocessing=cache.preprocessing)
    loop.model.build()                  # the model (a ModelSpec)
    state = loop.to_state()             # plain data, saved in every checkpoint
    read_loop_config(state) == loop     # and read back, also from checkpoints of the first format

The driver turns the user's ``Config`` and the training data's shapes into one ``LoopConfig``; the workers
(``mm_ray.train.worker``), the benchmark's plain loop, ``mm-ray evaluate`` and ``mm-ray embed`` read nothing
else. ``resolved`` is the run's config with the preprocessing its data really had: how to decode new shards
for this model.

Checkpoint formats: the first format saved a flat dict (``preset``, ``model_kwargs``, ``epochs``, ...,
``resolved``); ``read_loop_config`` reads both it and the current layout (``model`` as a nested dict). Pure
Python: no Ray, no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from mm_ray.config.load import ConfigError, as_dict, build, config_from_dict, persistable, with_keys
from mm_ray.config.schema import AugmentConfig, Config
from mm_ray.data.manifest import PreprocessingRecord
from mm_ray.modalities.legacy import manifest_shapes
from mm_ray.modalities.registry import (
    encoder_config_of,
    modalities_of,
    model_modalities,
    registry_with,
    settings_key,
    settings_of,
)
from mm_ray.models.pretrained.resolve import EncoderRequest, configured, resolve_encoders
from mm_ray.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What every Train worker runs: the model to build and how to train it (fields as in ``TrainConfig``)."""

    model: ModelSpec
    resolved: Config
    """The run's config, its preprocessing sections as the training data was made (``mm-ray evaluate``)."""
    epochs: int = 10
    batch_size: int = 64
    shuffle: bool = False
    """Defaults to off: the first checkpoint format predates shuffling."""
    shuffle_buffer: int = 0
    lr: float = 1e-3
    lr_by_modality: Mapping[str, float] = dataclasses.field(default_factory=dict)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    """Capped at ``total_steps``: a warm-up longer than the run would never reach the peak lr."""
    total_steps: int = 1
    """Optimizer steps of the whole run on each worker (the cosine schedule's length)."""
    grad_clip: float = 1.0
    seed: int = 0
    bf16: bool = False
    precision: str = "fp32"
    grad_accum_steps: int = 1
    compile: bool = False
    strategy: str = "ddp"
    checkpoint_every_steps: int = 0
    sample_log: str | None = None
    fail_at_step: int = 0
    prefetch_batches: int = 0
    torch_threads: int | None = None
    subset_eval_every: int = 1
    subset_dropout_after: int = 0
    """Epochs trained on every modality before the model's subset dropout starts (``subset_dropout_at``)."""
    fail_at_epoch: int = 0
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    aux_loss_weight: float = 0.0
    align_loss_weight: float = 0.0
    align_temperature: float = 0.07
    has_val: bool = False

    @classmethod
    def for_run(
        cls,
        cfg: Config,
        *,
        shapes: Mapping[str, list[int]],
        vocab_size: int,
        num_classes: int,
        rows: int,
        has_val: bool,
        preprocessing: PreprocessingRecord | None = None,
        cropped_at_decode: bool = False,
    ) -> LoopConfig:
        """The loop of run ``cfg`` on training data of ``rows`` samples whose model-ready ``shapes`` are
        ``{"image": [3, S, S], "input_ids": [L], ...}`` (a cache manifest's ``shapes``); ``preprocessing`` is
        the data's own record of its settings (``mm_ray.data.manifest.PreprocessingRecord``), when known;
        ``cropped_at_decode``: the image pools already drew the random resized crop (the batches are not
        cropped again; flips, rotation and jitter stay)."""
        t, m = cfg.train, cfg.model
        check_task(cfg)
        if m.builder and (t.aux_loss_weight > 0 or t.align_loss_weight > 0):
            raise ConfigError(
                "train.aux_loss_weight/align_loss_weight: the auxiliary and alignment losses need a preset's "
                f"FusionModel, not model.builder={m.builder}"
            )
        shapes = manifest_shapes(shapes)
        resolved = with_preprocessing(cfg, preprocessing)
        registry = modalities_of(resolved)
        modalities = model_modalities(resolved, registry)
        specs = [registry[name] for name in modalities]
        encoders = {}
        if configured(encoder_config_of(cfg, s) for s in specs) and m.builder:
            raise ConfigError(
                f"model.encoders: model.builder={m.builder} builds its own encoders; unset one of them"
            )
        requests = [
            EncoderRequest(s.name, encoder_config_of(cfg, s), s.library_kinds, settings_of(resolved, s),
                           shapes[s.column])
            for s in specs
        ]  # fmt: skip
        encoders = resolve_encoders(requests, vocab_size=vocab_size)
        rows_per_worker = math.ceil(rows / max(1, t.num_workers))
        # Optimizer steps: every grad_accum_steps micro-batches, and one for a short group at an epoch's end.
        batches_per_epoch = math.ceil(rows_per_worker / t.batch_size)
        total_steps = max(1, math.ceil(batches_per_epoch / t.grad_accum_steps) * t.epochs)
        spec = ModelSpec(
            preset=m.preset,
            modalities=modalities,
            num_classes=num_classes,
            shapes={c: tuple(shapes[c]) for s in specs for c in s.column_names},
            vocab_size=vocab_size,
            width=m.width,
            depth=m.depth,
            fusion_dim=m.fusion_dim,
            rank=m.rank,
            dropout=m.dropout,
            modality_dropout=m.modality_dropout,
            subset_dropout=m.subset_dropout,
            seed=t.seed,
            text_encoder=m.text_encoder,
            bidirectional=m.bidirectional,
            fusion_weights=dict(m.fusion_weights),
            # The extra heads exist only when their loss is on: unused parameters would stall DDP's all-reduce.
            aux_heads=t.aux_loss_weight > 0,
            align_dim=m.align_dim if t.align_loss_weight > 0 else 0,
            builder=m.builder or "",
            builder_kwargs=dict(m.builder_kwargs),
            vae_beta=m.vae_beta,
            encoders=encoders,
            plugins=tuple(cfg.modalities.plugins),
        )
        return cls(
            model=spec,
            resolved=resolved,
            epochs=t.epochs,
            batch_size=t.batch_size,
            shuffle=t.shuffle,
            shuffle_buffer=t.shuffle_buffer if t.shuffle else 0,
            lr=t.lr,
            lr_by_modality=dict(t.lr_by_modality),
            weight_decay=t.weight_decay,
            warmup_steps=min(t.warmup_steps, total_steps),
            total_steps=total_steps,
            grad_clip=t.grad_clip,
            seed=t.seed,
            bf16=t.bf16,
            precision=t.precision,
            grad_accum_steps=t.grad_accum_steps,
            compile=t.compile,
            strategy=t.strategy,
            checkpoint_every_steps=t.checkpoint_every_steps,
            sample_log=t.sample_log,
            fail_at_step=t.fail_at_step,
            prefetch_batches=t.prefetch_batches if t.prefetch_batches is not None else int(t.use_gpu),
            torch_threads=t.torch_threads,
            subset_eval_every=t.subset_eval_every,
            subset_dropout_after=m.subset_dropout_after,
            fail_at_epoch=t.fail_at_epoch,
            augment=(
                dataclasses.replace(t.augment, crop_min_scale=1.0, crop_max_aspect=1.0)
                if cropped_at_decode
                else t.augment
            ),
            aux_loss_weight=t.aux_loss_weight,
            align_loss_weight=t.align_loss_weight,
            align_temperature=t.align_temperature,
            has_val=has_val,
        )

    def shuffle_seed(self, epoch: int, rank: int) -> int:
        """The local shuffle buffer's seed of worker ``rank`` in epoch ``epoch`` (0-based)."""
        return (self.seed * 1_000_003 + epoch * 1009 + rank) % (2**31)

    def subset_dropout_at(self, epoch: int) -> float:
        """The model's subset dropout in epoch ``epoch`` (0-based): off for the first ``subset_dropout_after``."""
        return self.model.subset_dropout if epoch >= self.subset_dropout_after else 0.0

    def subsets_at(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) scores every modality subset (else all modalities only)."""
        every = self.subset_eval_every
        return epoch == self.epochs or (every > 0 and epoch % every == 0)

    def to_state(self) -> dict[str, Any]:
        """Plain data for a checkpoint (``torch.load(weights_only=True)`` reads it back)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(
            model=self.model.as_dict(),
            # Secrets stay out of checkpoints (data.storage_options keeps only its allow-listed keys).
            resolved=persistable(as_dict(self.resolved)),
            augment=as_dict(self.augment),
            lr_by_modality=dict(self.lr_by_modality),
        )
        return out


def read_loop_config(saved: Mapping[str, Any]) -> LoopConfig:
    """The ``LoopConfig`` a checkpoint saved (``to_state``), or the flat dict of the first checkpoint format.

    Raises ``ValueError`` naming what is missing or unknown.
    """
    data = dict(saved)
    if "model_kwargs" in data:  # format 1: preset and model_kwargs side by side, extra keys ignored below
        data["model"] = {"preset": data.pop("preset"), **data.pop("model_kwargs")}
        data.pop("tokenizer_json", None)
    if "model" not in data or "resolved" not in data:
        missing = [k for k in ("model", "resolved") if k not in data]
        raise ValueError(f"loop config: missing {missing}; not written by mm_ray's trainer")
    known = {f.name for f in dataclasses.fields(LoopConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"loop config: unknown field(s) {unknown}")
    data["model"] = ModelSpec.from_dict(data["model"])
    data["resolved"] = config_from_dict(data["resolved"])
    if "augment" in data:
        data["augment"] = build(AugmentConfig, data["augment"], prefix="train.augment")
    return LoopConfig(**data)


def check_task(cfg: Config) -> None:
    """``ConfigError`` when ``task.kind`` meets a setting only classification has: the auxiliary heads'
    cross-entropy (``train.aux_loss_weight``) and the generative presets' class-conditioned models."""
    kind = cfg.task.kind
    if kind == "classification":
        return
    if cfg.train.aux_loss_weight > 0:
        raise ConfigError(
            f"train.aux_loss_weight: the auxiliary heads are classifiers; set it to 0 with task.kind={kind}"
        )
    from mm_ray.models.presets import GENERATIVE_FAMILIES, PRESETS

    preset = PRESETS.get(cfg.model.preset)
    if preset is not None and preset.family in GENERATIVE_FAMILIES:
        raise ConfigError(
            f"model.preset: {cfg.model.preset} is class-conditioned; it does not train with task.kind={kind}"
        )


def with_preprocessing(cfg: Config, preprocessing: PreprocessingRecord | None) -> Config:
    """``cfg`` with the modalities and settings the training data was preprocessed with, and its class names when
    its labels were strings: what a model trained on it really saw, whatever the run's own config said. None
    leaves ``cfg`` as it is."""
    if preprocessing is None:
        return cfg
    known = registry_with(tuple(cfg.modalities.plugins))
    unknown = [name for name in preprocessing.modalities if name not in known]
    if unknown:
        raise ConfigError(
            f"modalities.plugins: the training data holds modality {unknown[0]!r}, which no spec of yours "
            "defines; name its plug-in in modalities.plugins"
        )
    # Laid over the run's config as dotted keys, through the loader: every recorded value is checked like a key
    # of the user's (a section holds only what its spec records).
    keys: dict[str, Any] = {}
    for name, recorded in preprocessing.modalities.items():
        keys.update({f"{settings_key(name)}.{k}": v for k, v in recorded.items()})
    if preprocessing.names_modalities:
        keys["data.modalities"] = list(known.order(preprocessing.modalities))
    task = preprocessing.task
    if task is not None:
        # How the labels were read (and regression's standardisation): evaluate/embed read new shards alike.
        keys.update(
            {"task.kind": task.kind, "task.targets": list(task.targets), "task.separator": task.separator}
        )
        if task.target_stats is not None:
            keys.update(
                {
                    "task.target_mean": list(task.target_stats.mean),
                    "task.target_std": list(task.target_stats.std),
                }
            )
    if preprocessing.classes:
        # The label map the rows' ids came from: evaluate/embed map new shards' labels with it.
        keys["data.classes"] = list(preprocessing.classes)
        if task is None:
            keys["data.labels"] = "names"
    cfg = with_keys(cfg, keys)
    if (preprocessing.classes or task is not None) and preprocessing.members is not None:
        # ... read from the members the label strings were read from.
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, members=preprocessing.members))
    return cfg
