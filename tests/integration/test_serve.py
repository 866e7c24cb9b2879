"""``mm-ray serve``: real HTTP requests on loopback to an exported model behind Ray Serve. A sample missing a
modality is scored, a hostile or malformed one gets a clear 4xx, and the server keeps answering."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="serving needs the [serve] extra (ray[serve])")
pytest.importorskip("safetensors", reason="export needs the [export] extra (safetensors)")

from ray import serve
from scoring_kit import write_checkpoint
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.inference.export import export
from mm_ray.inference.samples import SamplePredictor
from mm_ray.inference.serve_app import serve_export

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ("image.size=32", "audio.duration_s=0.25", "audio.n_mels=16", "text.max_length=16", "model.preset=gated",
         "model.width=8", "model.depth=1", "model.fusion_dim=8")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _body(members: dict[str, bytes]) -> bytes:
    return json.dumps({"members": {k: base64.b64encode(v).decode() for k, v in members.items()}}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    shard = str(write_samples(root / "s.tar", {f"k{i}": good_sample(i) for i in range(4)}))
    export(write_checkpoint(root / "ckpt", [shard], SMALL), root / "export")
    url = serve_export(str(root / "export"), port=_free_port(), num_cpus=0.5)
    yield url, read_tar_samples(shard), SamplePredictor.open(root / "export")
    serve.shutdown()


def test_requests_get_predictions_and_bad_ones_a_clear_4xx(server) -> None:
    url, samples, local = server
    good = samples["k2"]
    status, answer = _post(url, _body(good))
    assert status == 200
    np.testing.assert_allclose(answer["probabilities"], local.predict([good])[0]["probabilities"], atol=1e-5)

    status, answer = _post(url, _body({k: v for k, v in good.items() if k != "wav"}))
    assert status == 200 and answer["present"]["audio"] is False

    hostile = {**good, "jpg": b"\xff\xd8" + bytes(range(256)) * 4}
    status, answer = _post(url, _body(hostile))
    assert status == 422 and answer["error"] == "corrupt_image"
    status, answer = _post(url, b"\x00not json")
    assert status == 400 and answer["error"] == "bad_request"
    status, answer = _post(url, json.dumps({"members": {"jpg": "***"}}).encode())
    assert status == 400 and "base64" in answer["detail"]

    # Still up, and requests arriving together are all answered (batched by @serve.batch).
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda k: _post(url, _body(samples[k])), sorted(samples) * 2))
    assert [status for status, _ in results] == [200] * 8
    with urllib.request.urlopen(url, timeout=30) as response:
        assert json.loads(response.read())["modalities"] == ["image", "text", "audio"]
