"""Storage secrets never reach a file: run configs, checkpoints' loop configs and sweep files keep only the
allow-listed ``data.storage_options`` keys."""

from __future__ import annotations

import json

import yaml

from mm_ray.config.load import load_config, persistable
from mm_ray.train.outputs import write_run_outputs
from mm_ray.train.spec import LoopConfig

SECRET = "wJalrXUtnFEMI-do-not-persist"
OPTIONS = json.dumps(
    {"access_key": "AKIDEXAMPLE", "secret_key": SECRET, "session_token": SECRET, "endpoint_override": "h:9"}
)


def _cfg():
    return load_config(None, [f"data.storage_options={OPTIONS}", "model.num_classes=4"])


def test_persistable_keeps_only_allow_listed_storage_keys() -> None:
    from mm_ray.config.load import as_dict

    cfg = _cfg()
    assert cfg.data.storage_options["secret_key"] == SECRET  # in memory the run still has its credentials
    saved = persistable(as_dict(cfg))
    assert saved["data"]["storage_options"] == {"endpoint_override": "h:9"}
    assert as_dict(cfg)["data"]["storage_options"]["secret_key"] == SECRET  # the input is not modified


def test_run_outputs_and_checkpoint_loop_config_hold_no_secret(tmp_path) -> None:
    from mm_ray.config.load import as_dict

    cfg = _cfg()
    write_run_outputs(tmp_path, config=as_dict(cfg), summary={"history": []})
    text = (tmp_path / "config.yaml").read_text()
    assert SECRET not in text and "AKIDEXAMPLE" not in text
    assert yaml.safe_load(text)["data"]["storage_options"] == {"endpoint_override": "h:9"}
    loop = LoopConfig.for_run(
        cfg,
        shapes={"image": [3, 8, 8], "input_ids": [4], "audio": [4, 5]},
        vocab_size=10,
        num_classes=4,
        rows=10,
        has_val=False,
    )
    assert SECRET not in json.dumps(loop.to_state(), default=str)
