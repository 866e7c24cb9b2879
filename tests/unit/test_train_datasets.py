"""Which epoch's order the training datasets take when a worker group starts (``TrainDatasets``): a new run
epoch 0; after an epoch-end checkpoint the next epoch; after a step checkpoint the rest of the interrupted epoch
(``train_resume``, less what it trained) and the epochs after it (``train``): a restart keeps the shard order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mm_ray.train.datasets as datasets
from mm_ray.train.datasets import RESUME_DATASET, TrainDatasets
from mm_ray.train.position import DataPosition


class Recorder:
    """A recipe that records what it was asked to build."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def build(self, first_epoch: int = 0, *, sample_ids: bool = False, resume: Any = None) -> str:
        self.calls.append({"first_epoch": first_epoch, "sample_ids": sample_ids, "resume": resume})
        return f"dataset from epoch {first_epoch}"


@pytest.fixture
def position(monkeypatch):
    holder: dict[str, DataPosition | None] = {"position": None}
    monkeypatch.setattr(datasets, "latest_position", lambda storage: holder["position"])
    monkeypatch.setattr(datasets, "empty_dataset", lambda: "empty")  # Ray Data would start Ray
    return holder


def test_a_new_run_starts_at_epoch_0(position):
    recipe = Recorder()
    made = TrainDatasets(recipe, "storage/run", sample_ids=True).for_trainer()
    assert set(made) == {"train", RESUME_DATASET}
    assert made["train"]() == "dataset from epoch 0"
    assert recipe.calls == [{"first_epoch": 0, "sample_ids": True, "resume": None}]


def test_after_an_epoch_checkpoint_the_next_epoch_and_nothing_to_resume(position):
    position["position"] = DataPosition(epoch=3, global_step=30, steps_in_epoch=0)
    recipe = Recorder()
    made = TrainDatasets(recipe, "storage/run").for_trainer()
    assert made["train"]() == "dataset from epoch 3"
    assert made[RESUME_DATASET]() == "empty"
    assert len(recipe.calls) == 1


def test_after_a_step_checkpoint_the_rest_of_its_epoch_then_the_next(position):
    position["position"] = DataPosition(
        epoch=2, global_step=25, steps_in_epoch=5, trained=np.array([4, 9]), shards_done=("a.tar",)
    )
    recipe = Recorder()
    made = TrainDatasets(recipe, "storage/run", sample_ids=True).for_trainer()
    assert made["train"]() == "dataset from epoch 3"
    assert made[RESUME_DATASET]() == "dataset from epoch 2"
    resume = recipe.calls[-1]["resume"]
    assert resume.trained.tolist() == [4, 9] and resume.shards_done == {"a.tar"}
