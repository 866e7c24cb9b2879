"""``mm-ray export CHECKPOINT --out DIR [--format torchscript|onnx] [--mlflow] [key=value ...]``: a checkpoint's
model as files a program without mm_ray's training side loads (``mm_ray.load_exported``, ``torch.jit.load``, ONNX
Runtime).

    mm-ray export runs/demo --out exports/demo                         # safetensors + model.json + tokenizer
    mm-ray export runs/demo --out exports/demo --format torchscript    # and the traced model, checked on export
    mm-ray export runs/demo --out exports/demo --format onnx           # ONNX (the onnx extra), checked the same
    mm-ray export runs/demo --out exports/demo --mlflow track.mlflow=file:./mlruns   # logged as a model artifact

Calls ``mm_ray.export`` (see ``mm_ray.inference.export``). Exit code 2 for a path that is not a checkpoint, a
checkpoint naming code you did not name (``model.builder=``, ``modalities.plugins=``) or a bad key.
"""

from __future__ import annotations

import argparse

from mm_ray.cli.common import add_config_args, split_overrides, write_json
from mm_ray.config.load import ConfigError
from mm_ray.tables import format_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint's model: safetensors, JSON spec, tokenizer, TorchScript, ONNX"
    )
    p.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its latest checkpoint)")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides (model.builder, modalities.plugins, track.*)"
    )
    p.add_argument(
        "--out", metavar="DIR", required=True, help="the export directory (an earlier export is replaced)"
    )
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=["torchscript", "onnx"],
        default=[],
        help="also write the model as TorchScript (traced) or ONNX (torch.export; the onnx extra), its logits "
        "checked against the model's on export; repeat for both",
    )
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="log the directory as a model artifact in track.mlflow's experiment",
    )
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from mm_ray.inference.export import export

    words, overrides = split_overrides(args.overrides)
    if words:
        raise ConfigError(
            f"export takes one checkpoint and key=value overrides; unexpected: {' '.join(words)}"
        )
    result = export(
        args.checkpoint,
        args.out,
        formats=args.formats,
        overrides=overrides,
        config_file=args.config,
        log_to_mlflow=args.mlflow,
    )
    print(format_summary("export summary", result))
    write_json(args.json, result)
    return 0
