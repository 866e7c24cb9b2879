"""Each Train worker's local shuffle buffer gets its own seed every epoch: two workers, or two epochs, never
replay one order (the same order every epoch would make the shuffle a fixed permutation)."""

from __future__ import annotations

from mm_ray.config.load import load_config
from mm_ray.models import ModelSpec
from mm_ray.train.spec import LoopConfig

SPEC = ModelSpec(preset="late_concat", modalities=("image",), num_classes=2, shapes={"image": (3, 8, 8)})


def _loop(seed: int) -> LoopConfig:
    return LoopConfig(model=SPEC, resolved=load_config(None), seed=seed, shuffle=True, shuffle_buffer=64)


def test_every_epoch_and_rank_of_a_run_gets_its_own_seed_reproducibly() -> None:
    loop = _loop(seed=7)
    seeds = {(epoch, rank): loop.shuffle_seed(epoch, rank) for epoch in range(20) for rank in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # no two (epoch, rank) pairs share a buffer order
    assert all(0 <= s < 2**31 for s in seeds.values())
    assert seeds == {(e, r): _loop(seed=7).shuffle_seed(e, r) for e in range(20) for r in range(8)}


def test_another_run_seed_gives_other_seeds() -> None:
    a = {_loop(seed=1).shuffle_seed(e, r) for e in range(5) for r in range(4)}
    b = {_loop(seed=2).shuffle_seed(e, r) for e in range(5) for r in range(4)}
    assert not a & b
