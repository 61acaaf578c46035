"""cluster/ agrees with the jobs it runs: the files parse, entrypoints name real job scripts and
presets with valid options, resources match the production preset, one image and one set of pins,
token authentication on every node and submitter."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cp_dist.config import load_config
from jobs.job_cli import job_parser

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
RAY_JOBS = sorted((CLUSTER / "kuberay").glob("rayjob-*.yaml"))


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _pin(name: str) -> str:
    (version,) = re.findall(rf"^{re.escape(name)}(?:\[[^\]]*\])?==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    return version


def _worker_group() -> dict:
    (group,) = _yaml(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]["workerGroupSpecs"]
    return group


def test_every_config_parses() -> None:
    assert _yaml(CLUSTER / "ray-cluster.yaml")["cluster_name"] == "cp-dist"
    assert _yaml(CLUSTER / "kuberay" / "raycluster.yaml")["kind"] == "RayCluster"
    assert [_yaml(p)["kind"] for p in RAY_JOBS] == ["RayJob", "RayJob"]


@pytest.mark.parametrize("path", RAY_JOBS, ids=lambda p: p.stem)
def test_entrypoints_run_real_jobs_with_valid_options(path: Path) -> None:
    spec = _yaml(path)["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": _yaml(CLUSTER / "kuberay" / "raycluster.yaml")["metadata"]["name"]}
    python, script, *argv = shlex.split(spec["entrypoint"])
    assert python == "python" and (REPO / script).is_file()
    prefix, _, dataset = Path(script).stem.partition("_")
    assert path.stem == f"rayjob-{prefix}"
    stage = {"pamlm": "pamlm", "finetune": "with_plm"}[prefix]
    args = job_parser(stage, dataset, Path(script).name).parse_args(argv)  # exits on an unknown option
    config = load_config(args.preset, args.set)
    assert args.preset == f"{dataset}-production" and config.distributed.gpus_per_worker >= 1
    assert args.work.is_absolute() and args.storage.startswith("/mnt/cluster_storage/")
    if stage == "with_plm":  # starts from where the PA-MLM job writes its model
        pamlm_entrypoint = shlex.split(_yaml(CLUSTER / "kuberay" / "rayjob-pamlm.yaml")["spec"]["entrypoint"])
        pamlm = job_parser("pamlm", dataset, "x").parse_args(pamlm_entrypoint[2:])
        assert args.pretrained == pamlm.work / pamlm.name


def test_resources_fit_the_production_preset() -> None:
    distributed = load_config("goodreads-production").distributed
    group = _worker_group()
    gpus, cpus = int(group["rayStartParams"]["num-gpus"]), int(group["rayStartParams"]["num-cpus"])
    (container,) = group["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == gpus
    assert int(container["resources"]["limits"]["cpu"]) >= cpus
    workers_per_node = gpus // distributed.gpus_per_worker
    assert group["replicas"] * workers_per_node == distributed.nproc, "one Ray Train worker per GPU of the cluster"
    assert workers_per_node * distributed.cpus_per_worker <= cpus
    launcher = _yaml(CLUSTER / "ray-cluster.yaml")
    node = launcher["available_node_types"]["gpu_worker"]
    assert node["min_workers"] * node["resources"]["GPU"] == distributed.nproc * distributed.gpus_per_worker
    assert node["resources"]["GPU"] // distributed.gpus_per_worker * distributed.cpus_per_worker <= node["resources"]["CPU"]
    assert launcher["max_workers"] >= node["min_workers"]
    assert any("--num-gpus=8" in c for c in launcher["worker_start_ray_commands"]) and node["resources"]["GPU"] == 8


def test_one_image_and_one_set_of_pins() -> None:
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    (tag,) = set(re.findall(r"docker build -f cluster/Dockerfile -t (\S+) \.", dockerfile))
    cluster = _yaml(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]
    images = {c["image"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]}
    images |= {c["image"] for c in _worker_group()["template"]["spec"]["containers"]}
    images.add(_yaml(CLUSTER / "ray-cluster.yaml")["docker"]["image"])
    images |= {c["image"] for p in RAY_JOBS for c in _yaml(p)["spec"]["submitterPodTemplate"]["spec"]["containers"]}
    assert images == {tag}
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert tag.split(":")[1].startswith(version) and f'org.opencontainers.image.version="{version}"' in dockerfile
    assert cluster["rayVersion"] == _pin("ray") and f'ai.cp-dist.ray-version="{_pin("ray")}"' in dockerfile
    assert f"torch=={_pin('torch')} fbgemm-gpu=={_pin('fbgemm-gpu-cpu')}" in dockerfile, "CUDA builds of the pinned versions"
    assert "COPY jobs ./jobs" in dockerfile and "requirements-nodeps.txt" in dockerfile


def _auth_env(container: dict) -> tuple[str, str]:
    """(mode, the Secret its token comes from) of a container's environment."""
    env = {e["name"]: e for e in container.get("env", [])}
    secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret["key"] == "auth_token", container["name"]
    return env["RAY_AUTH_MODE"]["value"], secret["name"]


def test_every_node_and_submitter_runs_with_the_clusters_token() -> None:
    """Token authentication on everywhere, one token: a node or a submitter without it is refused."""
    launcher = _yaml(CLUSTER / "ray-cluster.yaml")
    starts = [c for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts), starts
    assert launcher["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    cluster = _yaml(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]
    containers = cluster["headGroupSpec"]["template"]["spec"]["containers"] + _worker_group()["template"]["spec"]["containers"]
    containers += [c for p in RAY_JOBS for c in _yaml(p)["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    assert len(containers) == 4 and {_auth_env(c) for c in containers} == {("token", "cp-dist-ray-token")}
    assert "kubectl create secret generic cp-dist-ray-token --from-file=auth_token=" in (CLUSTER / "README.md").read_text()
