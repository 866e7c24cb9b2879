"""Every file under ``cluster/`` parses, and every ``mm-ray`` command in them would run.

The commands are checked as ``mm-ray submit`` checks a job (``mm_ray.cluster.plan``): parsed by the real
parser, config loaded, named config files present in the repository. A renamed flag or pipeline then
fails here instead of at 02:00 on a cluster.
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from mm_ray.cli.main import parse_args
from mm_ray.cluster.submit import plan_job

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY_KINDS = {"RayCluster", "RayJob", "RayCronJob"}


def yaml_docs() -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for path in sorted(CLUSTER.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def kuberay_entrypoints() -> list[tuple[str, str]]:
    found = []
    for path, doc in yaml_docs():
        spec = doc.get("spec", {})
        if doc.get("kind") == "RayJob":
            found.append((path.name, spec["entrypoint"]))
        elif doc.get("kind") == "RayCronJob":
            found.append((path.name, spec["jobTemplate"]["entrypoint"]))
    return found


def systemd_commands() -> list[tuple[str, str]]:
    found = []
    for path in sorted((CLUSTER / "systemd").glob("*.service")):
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.optionxform = str  # systemd keys are case-sensitive
        unit.read_string(path.read_text())
        found.append((path.name, unit["Service"]["ExecStart"]))
    return found


def readme_commands() -> list[tuple[str, str]]:
    """The lines of the README's code blocks that run ``mm-ray`` (the cron line included)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", (CLUSTER / "README.md").read_text(), flags=re.S)
    return [("README.md", line) for block in blocks for line in block.splitlines() if "mm-ray " in line]


def mm_ray_argv(command: str) -> list[str] | None:
    """The arguments after ``mm-ray`` in a shell line (``cd DIR && mm-ray ...``, ``.venv/bin/mm-ray ...``)."""
    for part in re.split(r"&&|;", command):
        words = shlex.split(part.split(">>")[0], comments=True)
        for i, word in enumerate(words):
            if Path(word).name == "mm-ray":
                return words[i + 1 :]
    return None


COMMANDS = kuberay_entrypoints() + systemd_commands() + readme_commands()


def test_every_yaml_parses_and_kuberay_objects_are_ray_io_v1() -> None:
    docs = yaml_docs()
    kinds = {doc["kind"] for _, doc in docs if "kind" in doc}
    assert kinds == KUBERAY_KINDS
    for path, doc in docs:
        if "kind" not in doc:
            continue
        assert doc["apiVersion"] == "ray.io/v1", path
        spec = doc["spec"]
        cluster = {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayCronJob": None}[doc["kind"]]
        cluster = cluster or spec["jobTemplate"]["rayClusterSpec"]
        assert cluster["authOptions"] == {"mode": "token"}, path
        assert cluster["rayVersion"] == ray.__version__, path  # the version the project pins


def test_the_launcher_has_a_cpu_and_a_gpu_node_type_and_installs_the_project() -> None:
    config = yaml.safe_load((CLUSTER / "launcher" / "mm-ray.yaml").read_text())
    types = config["available_node_types"]
    assert config["head_node_type"] in types and {"cpu_preprocess", "gpu_train"} <= set(types)
    assert any("pip install -e" in c for c in config["setup_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts)


def test_commands_are_found_in_every_kind_of_file() -> None:
    sources = {source for source, _ in COMMANDS}
    assert {"rayjob-train.yaml", "raycronjob-sweep.yaml", "mm-ray-sweep.service", "README.md"} <= sources
    assert any(re.match(r"^(\S+ ){5}cd ", line) for _, line in COMMANDS), "the README's cron line"


@pytest.mark.parametrize(("source", "command"), COMMANDS, ids=[f"{s}:{c[:60]}" for s, c in COMMANDS])
def test_every_mm_ray_command_is_valid_and_its_config_files_exist(source: str, command: str) -> None:
    argv = mm_ray_argv(command)
    assert argv, f"{source}: no mm-ray command in {command!r}"
    args = parse_args(argv)  # exits (fails the test) on an unknown command or argument
    if args.command == "jobs":
        return
    # `submit` checks the command after `--`; any other command is checked as if it were submitted.
    plan_job(args.job if args.command == "submit" else argv, project_root=ROOT)
