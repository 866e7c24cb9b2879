"""Images per second of the image decoders on real shards' images, in one process (the GPU check runs it):

    python -m mm_ray.bench.image_decode --shards 'runs/bench/shards/train-*.tar' --size 224 --device cuda

- ``pillow``: ``ImagePreprocessor`` as the pools run it (JPEG draft decode at reduced scale, Pillow resize);
- ``torch-cpu``: ``DeviceImageDecoder`` on the CPU (full-size Pillow decode, torch resize): the GPU path's fallback;
- ``nvjpeg``: ``DeviceImageDecoder`` on ``--device`` (CUDA): nvJPEG in batches of ``--batch``, torch resize there.

CPU decoders run one thread (as one decoding actor of 1 CPU does). Prints a table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def shard_images(urls: Sequence[str], limit: int) -> list[bytes]:
    """Up to ``limit`` encoded images from the shards, as stored."""
    from mm_ray.data.raw import RawSample
    from mm_ray.data.tar_stream import iter_shard

    out: list[bytes] = []
    for url in urls:
        for item in iter_shard(url):
            if isinstance(item, RawSample):
                data = next((item.members[e] for e in IMAGE_EXTENSIONS if e in item.members), None)
                if data:
                    out.append(data)
            if len(out) >= limit:
                return out
    return out


def rate(
    decode: Callable[[list[bytes]], object], images: list[bytes], batch: int, sync: Callable[[], None]
) -> float:
    """Images per second of ``decode`` over ``images`` in batches of ``batch`` (after one warm-up batch)."""
    decode(images[:batch])
    sync()
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        decode(images[i : i + batch])
    sync()
    return len(images) / (time.perf_counter() - start)


def bench_image_decode(
    urls: Sequence[str], *, size: int, device: str, batch: int, limit: int
) -> dict[str, float]:
    """``{decoder: images/s}`` for the decoders the machine has (``nvjpeg`` only with CUDA)."""
    import numpy as np
    import torch

    from mm_ray.modalities.image_decode import ImagePreprocessor
    from mm_ray.modalities.image_device import DeviceImageDecoder

    torch.set_num_threads(1)
    images = shard_images(urls, limit)
    pillow = ImagePreprocessor(size=size, resize="crop")
    results = {
        "pillow": rate(
            lambda b: pillow({"image_bytes": np.array(b, dtype=object)}), images, batch, lambda: None
        ),
        "torch-cpu": rate(DeviceImageDecoder(size, "cpu"), images, batch, lambda: None),
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        results["nvjpeg"] = rate(DeviceImageDecoder(size, device), images, batch, torch.cuda.synchronize)
    return {"images": len(images), **{k: round(v, 1) for k, v in results.items()}}


def main(argv: Sequence[str] | None = None) -> None:
    from mm_ray.data.sources import expand_shards

    p = argparse.ArgumentParser(
        prog="python -m mm_ray.bench.image_decode", description=__doc__.splitlines()[0]
    )
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--limit", type=int, default=2000, help="images read from the shards at most")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = bench_image_decode(
        expand_shards(args.shards), size=args.size, device=args.device, batch=args.batch, limit=args.limit
    )
    print(f"image decode to {args.size} px, {result['images']} images, batch {args.batch}:")
    for name, value in result.items():
        if name != "images":
            print(f"  {name:10s} {value:9.1f} images/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
