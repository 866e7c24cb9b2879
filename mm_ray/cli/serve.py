"""``mm-ray serve EXPORT_DIR [--host H] [--port P] [--replicas N]``: an exported model over HTTP with Ray Serve.

    mm-ray export runs/demo --out exports/demo && mm-ray serve exports/demo          # http://127.0.0.1:8000/
    curl -s localhost:8000/ -d "{\"members\": {\"txt\": \"$(printf 'a red bus' | base64)\"}}"
    mm-ray serve exports/demo --host 0.0.0.0 --replicas 4 --address auto             # on a cluster's head node

Needs the ``serve`` extra (``pip install 'mm-ray[serve]'``). Calls ``mm_ray.inference.serve_app.serve_export``
and stays up until interrupted (Ctrl-C). The request and answer formats are in that module's docstring. Exit code
2 for a directory that is not an export or an export naming code you did not name (``--builder``, ``--plugin``).
"""

from __future__ import annotations

import argparse
import time

from mm_ray.cli.common import write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an exported model over HTTP with Ray Serve (the serve extra)")
    p.add_argument("export_dir", help="a directory written by `mm-ray export`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--replicas", type=int, default=1, help="model replicas (each holds one copy of the model)"
    )
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    p.add_argument("--max-batch-size", type=int, default=16, help="requests scored together at most")
    p.add_argument("--address", help="a running Ray cluster to join (auto, HOST:PORT); default: a local Ray")
    p.add_argument("--builder", help="the model.builder you trust, when the export names one")
    p.add_argument("--plugin", dest="plugins", action="append", default=[],
                   help="a plug-in modality (package.module:NAME) you trust, when the export names one")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write where it serves (url, export) as JSON once it is up")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from mm_ray.config.schema import RayConfig
    from mm_ray.inference.export import load_exported
    from mm_ray.runtime import init_ray

    load_exported(args.export_dir, builder=args.builder, plugins=args.plugins)  # refused before Ray starts
    try:
        from mm_ray.inference.serve_app import serve_export
    except ImportError as err:
        raise SystemExit(
            f"mm-ray serve: needs the serve extra: pip install 'mm-ray[serve]' ({err})"
        ) from None
    init_ray(RayConfig(address=args.address))
    url = serve_export(
        args.export_dir,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        num_cpus=args.num_cpus,
        max_batch_size=args.max_batch_size,
        builder=args.builder,
        plugins=args.plugins,
    )
    print(f"serving {args.export_dir} at {url} (Ctrl-C stops)", flush=True)
    write_json(args.json, {"url": url, "export": args.export_dir})
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
