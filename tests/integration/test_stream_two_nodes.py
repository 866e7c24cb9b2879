"""Streaming training on a real 2-node cluster: the decoding pool pinned to one node, a Train worker on each.

A loopback cluster (``tests/loopback_cluster.py``): a head of 1 CPU and ``node2`` of 3 CPUs. Both declare one
``trainslot``, and each Train worker asks for a whole one, so the two workers land one per node; only
``node2`` declares ``node2``, and the decoding pool asks for a sliver of it, so every decoding actor runs
there. ``mm-ray train`` runs as a Ray job straight from the shards (no cache), as on a cluster whose CPU
nodes decode for its GPU nodes. Expected counts come from the tar files read with ``tarfile`` alone.

The module drives the cluster only through the job API, its state API and the shared files: no Ray in the
test process (the integration conftest's local Ray is switched off below).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from loopback_cluster import LoopbackCluster
from shardkit import caption, good_sample, read_tar_samples, write_samples

from mm_ray.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLASS_WORDS = ("meadow", "harbour", "canyon", "glacier")
PER_SHARD = 100
EPOCHS = 2


@pytest.fixture(scope="module")
def local_ray() -> None:
    """No local Ray in this module: the loopback cluster is the only Ray, reached through its job API."""


def _easy(seed: int, label: int) -> dict[str, bytes]:
    """A sample whose caption starts with its class's word: two epochs learn it."""
    sample = good_sample(seed, label=label)
    sample["txt"] = f"{CLASS_WORDS[label]} {caption(seed)}".encode()
    return sample


def _shards(out: Path) -> dict[str, list[str]]:
    """4 training shards of easy samples plus one with two planted bad samples, and a validation shard."""
    labels = np.random.default_rng(0).integers(0, len(CLASS_WORDS), 500)
    samples = {f"s{i:04d}": _easy(i, int(label)) for i, label in enumerate(labels)}
    keys = sorted(samples)
    train = [
        str(
            write_samples(
                out / f"train-{i}.tar", {k: samples[k] for k in keys[i * PER_SHARD : (i + 1) * PER_SHARD]}
            )
        )
        for i in range(4)
    ]
    bad = _easy(900, 1)
    bad["jpg"] = b"not a jpeg at all"
    no_label = _easy(901, 2)
    del no_label["cls"]
    mixed = {"m0": _easy(902, 0), "m1": bad, "m2": _easy(903, 3), "m3": no_label}
    train.append(str(write_samples(out / "train-mixed.tar", mixed)))
    val = str(write_samples(out / "val.tar", {k: samples[k] for k in keys[400:]}))
    return {"train": train, "val": [val]}


def _good_rows(specs: list[str]) -> int:
    return sum(
        "cls" in members and members.get("jpg") != b"not a jpeg at all"
        for spec in specs
        for members in read_tar_samples(spec).values()
    )


def _actors(cluster: LoopbackCluster) -> list[dict]:
    """Every actor the cluster has run (dead ones too), from the state API behind the dashboard."""
    request = urllib.request.Request(
        f"{cluster.address}/api/v0/actors?detail=1&limit=10000",
        headers={"Authorization": f"Bearer {cluster.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)["data"]["result"]["result"]


# Slow: ~2-3 minutes on 2 cores (cluster start, the job's Ray Train start-up, two streamed epochs).
def test_streaming_training_on_two_nodes_with_the_pool_pinned_to_one(tmp_path: Path) -> None:
    shards = _shards(tmp_path)
    good = _good_rows(shards["train"])
    assert good % 2 == 0  # Ray Train's split gives both workers equal rows: an odd row would be dropped
    train = ["train", f"output_dir={tmp_path / 'runs'}", "name=two-nodes"]
    train += [f"data.shards={json.dumps(shards['train'])}", f"data.val_shards={json.dumps(shards['val'])}"]
    train += ["image.size=16", "audio.n_mels=16", "audio.duration_s=0.25", "text.max_length=8"]
    train += ["text.vocab_size=200", "text.tokenizer_train_samples=600", "data.error_budget=0.2"]
    train += ["model.num_classes=4", "model.width=16", "model.depth=1", "model.fusion_dim=16"]
    train += [f"train.epochs={EPOCHS}", "train.batch_size=16", "train.lr=0.006", "train.warmup_steps=5"]
    train += [f"train.storage_path={tmp_path / 'storage'}", "train.subset_eval_every=0"]
    # One trainslot per node and one per worker: a worker on each node. The pool: node2's marker, 2 actors.
    train += ["train.num_workers=2", "train.cpus_per_worker=0.5", "train.worker_resources={trainslot: 1}"]
    train += ["pools.fused.resources={node2: 0.001}", "pools.fused.num_cpus=0.75"]

    with LoopbackCluster.start(num_cpus=1, resources={"trainslot": 1}) as cluster:
        cluster.add_node("node2", num_cpus=3, resources={"trainslot": 1})
        auth = ["--address", cluster.address, "--token-file", str(cluster.token_file)]
        nodes = cluster.node_ids()
        assert set(nodes) == {"head", "node2"}
        assert main(["submit", *auth, "--wait", "--", *train]) == 0
        actors = _actors(cluster)

    decoders = [a for a in actors if "MapWorker" in a.get("class_name", "")]
    placed = [a for a in decoders if a.get("node_id")]
    assert placed, sorted({a.get("class_name") for a in actors})
    assert {a["node_id"] for a in placed} == {nodes["node2"]}, "every decoding actor on the pinned node"
    # Ray Data may ask for an actor it then no longer needs: one that never started ran nowhere.
    unplaced = [(a.get("state"), str(a.get("death_cause"))[:300]) for a in decoders if not a.get("node_id")]
    print(f"decoding actors: {len(placed)} placed on node2, {len(unplaced)} never placed: {unplaced}")
    assert all(state == "DEAD" for state, _ in unplaced)
    summary = json.loads((tmp_path / "runs" / "two-nodes" / "summary.json").read_text())
    history = summary["history"]
    assert [m["epoch"] for m in history] == list(range(1, EPOCHS + 1))
    for epoch in history:
        # Node ids recorded inside the workers: one worker on each node.
        assert set(epoch["worker_nodes"].split(",")) == {nodes["head"], nodes["node2"]}
        # Every good sample once per epoch, over both workers (nothing lost or repeated by the split).
        assert epoch["train_samples"] == good
        assert epoch["ingest_samples_quarantined"] == 2
        assert epoch["quarantine/corrupt_image"] == 1 and epoch["quarantine/missing_label"] == 1
        assert epoch["val_samples"] == _good_rows(shards["val"])
    assert summary["ingest"]["samples_quarantined"] == 2
    assert "node2" in summary["ingest"]["pools"]  # the plan says where the pool is pinned
    log = tmp_path / "runs" / "two-nodes" / "quarantine.jsonl"
    assert sorted(json.loads(line)["key"] for line in log.read_text().splitlines()) == ["m1", "m3"]
    # The caption's first word gives the class away: two epochs learn it (chance is 0.25).
    assert summary["metrics"]["val_accuracy"] >= 0.6, summary["metrics"]
