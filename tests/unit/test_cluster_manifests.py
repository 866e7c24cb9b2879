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


def test_the_launcher_copies_an_allow_list_of_the_project_to_the_nodes() -> None:
    # Not the whole checkout minus some patterns: only what installing the project needs, each by name, so a
    # `.env`, a key or data in the checkout can never travel (what `mm-ray submit` uploads is as narrow).
    config = yaml.safe_load((CLUSTER / "launcher" / "mm-ray.yaml").read_text())
    project = {
        remote: local
        for remote, local in config["file_mounts"].items()
        if remote.startswith("/home/ray/mm_ray")
    }
    assert sorted(project.values()) == ["./README.md", "./mm_ray", "./pipelines", "./pyproject.toml"]
    for remote, local in project.items():
        assert remote == "/home/ray/mm_ray/" + local.removeprefix("./")  # the layout pip install -e expects
        assert (CLUSTER.parent / local).exists()
    assert "." not in config["file_mounts"].values()


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


# The KubeRay release that first has each feature a manifest uses (KubeRay's release notes): token auth
# (`authOptions`) in 1.5.1, RayCronJob in 1.6.0 (alpha, behind the RayCronJob feature gate).
KUBERAY_SINCE = {"authOptions": (1, 5, 1), "RayCronJob": (1, 6, 0)}
_STATED = re.compile(r"KubeRay(?: operator)? >= (\d+)\.(\d+)\.(\d+)")


def _needs(text: str) -> tuple[int, ...]:
    uses = [since for feature, since in KUBERAY_SINCE.items() if re.search(rf"\b{feature}\b:?", text)]
    return max(uses, default=())


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-train.yaml", "raycronjob-sweep.yaml"])
def test_each_manifest_states_the_kuberay_release_it_needs(name: str) -> None:
    text = (CLUSTER / "kuberay" / name).read_text()
    manifest = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    stated = {tuple(map(int, m)) for m in _STATED.findall(text)}
    assert stated == {_needs(manifest)}, f"{name}: states {stated}, its features need {_needs(manifest)}"
    if "kind: RayCronJob" in manifest:
        assert "--feature-gates=RayCronJob=true" in text and "alpha" in text


def test_the_cluster_readme_states_the_same_releases() -> None:
    text = (CLUSTER / "README.md").read_text()
    stated = {tuple(map(int, m)) for m in _STATED.findall(text)}
    assert stated == set(KUBERAY_SINCE.values())


def test_the_image_runs_as_its_user_in_a_working_directory_it_owns() -> None:
    lines = [line.strip() for line in (CLUSTER / "kuberay" / "Dockerfile").read_text().splitlines()]
    steps = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    users = [arg for op, arg in steps if op == "USER"]
    [workdir] = [arg for op, arg in steps if op == "WORKDIR"]
    assert users, "the image never says which user it runs as"
    user = users[-1]
    assert user not in ("root", "0"), "the image ends as root"
    owned = rf"(install -d -o {user}\b.* {workdir}$|chown (-R )?{user}\S* {workdir}$)"
    made = [i for i, (op, arg) in enumerate(steps) if op == "RUN" and re.search(owned, arg)]
    assert made and made[0] < steps.index(["WORKDIR", workdir]), f"{workdir} is not made {user}'s before use"
    copies = [arg for op, arg in steps if op == "COPY"]
    assert copies and all(arg.startswith(f"--chown={user}:") for arg in copies)


def launcher_config() -> dict:
    return yaml.safe_load((CLUSTER / "launcher" / "mm-ray.yaml").read_text())


def test_the_launcher_yaml_matches_the_schema_in_rays_wheel() -> None:
    import json
    from importlib.resources import files

    import jsonschema

    schema = json.loads((files("ray.autoscaler") / "ray-schema.json").read_text())
    jsonschema.validate(launcher_config(), schema)
    typo = launcher_config()
    typo["available_node_types"]["gpu_train"]["max_worker"] = 2
    with pytest.raises(jsonschema.ValidationError, match="'max_worker' was unexpected"):
        jsonschema.validate(typo, schema)


def test_the_launcher_yaml_passes_rays_own_validate_config() -> None:
    # Ray has no public validator for cluster launcher YAML: `ray up` fills in the provider's defaults
    # and validates with the private functions below (the closest upstream thread, on validating cluster
    # YAMLs: ray-project/ray#5293). If they move, this test skips saying so; the schema test above stays.
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as err:
        pytest.skip(f"Ray's private cluster config validator is no longer where Ray 2.60 had it: {err}")
    validate_config(prepare_config(launcher_config()))
    unbounded = launcher_config()
    unbounded["available_node_types"]["cpu_preprocess"]["min_workers"] = 11  # > max_workers: 10
    with pytest.raises(ValueError, match="smaller than the sum of `min_workers`"):
        validate_config(prepare_config(unbounded))


def test_the_systemd_unit_is_sandboxed() -> None:
    """``systemd-analyze security`` scores the unit file itself (offline); skipped where systemd is absent."""
    import shutil
    import subprocess

    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = CLUSTER / "systemd" / "mm-ray-sweep.service"
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    if score is None:
        pytest.skip(f"this systemd-analyze cannot score a unit file offline: {out.stderr.strip()[:200]}")
    assert float(score.group(1)) <= 2.0, out.stdout


def _placement() -> dict[str, set[str]]:
    """The custom resources ``pipelines/stream_cluster.yaml`` pins its pools and its Train workers with."""
    from mm_ray.config.load import load_config

    cfg = load_config(ROOT / "pipelines" / "stream_cluster.yaml")
    pools = {
        name
        for pool in (cfg.pools.fused, cfg.pools.image, cfg.pools.text, cfg.pools.audio)
        for name in pool.resources
    }
    return {"pools": pools, "workers": set(cfg.train.worker_resources)}


def _kuberay_groups() -> dict[str, set[str]]:
    import json

    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    groups = {}
    for group in doc["spec"]["workerGroupSpecs"]:
        declared = group.get("rayStartParams", {}).get("resources")
        # KubeRay passes the value to `ray start --resources=...` as written: a quoted JSON object.
        groups[group["groupName"]] = set(json.loads(json.loads(declared))) if declared else set()
    return groups


def test_the_node_groups_declare_the_resources_the_placement_pipeline_pins_to() -> None:
    pins = _placement()
    assert pins["pools"] and pins["workers"] and not pins["pools"] & pins["workers"]
    types = launcher_config()["available_node_types"]
    assert pins["pools"] <= set(types["cpu_preprocess"]["resources"])
    assert pins["workers"] <= set(types["gpu_train"]["resources"])
    assert types["cpu_preprocess"]["min_workers"] >= 1  # a type scaled to zero declares nothing
    groups = _kuberay_groups()
    assert pins["pools"] <= groups["cpu-preprocess"] and pins["workers"] <= groups["gpu-train"]
    # Each marker on its own group only: pinned work cannot land on the wrong kind of node.
    assert not pins["pools"] & groups["gpu-train"] and not pins["workers"] & groups["cpu-preprocess"]
    assert not pins["workers"] & set(types["cpu_preprocess"]["resources"])
