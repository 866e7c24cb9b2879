"""A checkpoint without a training run, and the independent reference its predictions are held to.

    ckpt = write_checkpoint(tmp_path / "ckpt", shard_specs, SMALL)   # real tokenizer trained on the captions
    expected = reference_predictions(ckpt, urls)    # key -> probabilities, decoded and scored in this process

The checkpoint is what the Ray Train adapter writes (``state.pt`` with the loop config, ``tokenizer.json`` beside
it); its weights are the spec's initial ones moved by a seeded perturbation, so they are not what a model rebuilt
from the spec alone would hold. The reference reads each shard with ``tarfile`` (``shardkit.read_tar_samples``),
decodes with the modalities' own preprocessors in one process and runs the model there: no Ray, no pools, no
replica, no Parquet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from shardkit import read_tar_samples
from tokenizers import Tokenizer

from mm_ray.bench.baselines import BatchDecoder
from mm_ray.config.load import load_config
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.manifest import model_ready_shapes
from mm_ray.data.members import assemble, member_map
from mm_ray.data.pipeline import decoders_of
from mm_ray.data.raw import RawSample
from mm_ray.train.checkpoint import TOKENIZER_FILE, open_checkpoint, save_checkpoint
from mm_ray.train.loop import to_device
from mm_ray.train.spec import LoopConfig


def write_checkpoint(
    directory: Path, specs: Sequence[str], overrides: Sequence[str], *, num_classes: int = 4, seed: int = 0
) -> Path:
    cfg = load_config(None, list(overrides))
    tokenizer_json = obtain_tokenizer(cfg, list(specs))
    vocab = Tokenizer.from_str(tokenizer_json).get_vocab_size()
    loop = LoopConfig.for_run(cfg, shapes=model_ready_shapes(cfg), vocab_size=vocab, num_classes=num_classes,
                              rows=48, has_val=False)  # fmt: skip
    model = loop.model.build()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    save_checkpoint(directory, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    scheduler=None, epoch=1, config=loop.to_state())  # fmt: skip
    (directory / TOKENIZER_FILE).write_text(tokenizer_json)
    return directory


def reference_predictions(checkpoint: Path, urls: Sequence[str]) -> dict[str, np.ndarray]:
    """Key -> softmax probabilities of every sample of ``urls`` that decodes, computed in this process."""
    ckpt = open_checkpoint(checkpoint)
    cfg = ckpt.config(["data.label_required=false"])
    decoder = BatchDecoder(decoders_of(cfg, ckpt.tokenizer_json))
    members = member_map(cfg)
    model = ckpt.restore_model()
    out: dict[str, np.ndarray] = {}
    for url in urls:
        rows = [assemble(RawSample(url, key, m), members)[0] for key, m in read_tar_samples(url).items()]
        batch = decoder([r for r in rows if r is not None])
        with torch.no_grad():
            probabilities = torch.softmax(model(to_device(batch, "cpu")).float(), dim=-1).numpy()
        out.update(zip((str(k) for k in batch["__key__"]), probabilities, strict=True))
    return out
