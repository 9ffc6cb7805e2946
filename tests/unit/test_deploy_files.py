"""The deployment files (Dockerfile, deploy/compose.yml, deploy/nginx.conf,
deploy/tokenbot.service) agree with each other and with the code: the ports, the
shutdown window, the database connections, the locked dependencies."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import _ENV_NAMES, _REQUIRED, parse_listen
from bot.deps import DRAIN_TIMEOUT
from bot.server import GRACEFUL_SHUTDOWN
from storage.db import ASYNC_CONNECTIONS, make_engine

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# What SIGTERM may take before the process exits on its own (README, "Security limits").
SHUTDOWN_WINDOW = GRACEFUL_SHUTDOWN + DRAIN_TIMEOUT


# -- Dockerfile --------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def dockerfile_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile: instruction names upper-cased, continuation lines joined,
    comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.strip().partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((instruction, args))
    return stages


def exec_form(args: str) -> list[str]:
    parsed = yaml.safe_load(args)  # a JSON array is YAML too
    assert isinstance(parsed, list), f"not in exec form (a JSON array): {args}"
    return [str(word) for word in parsed]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


DOCKERFILE = dockerfile_stages((ROOT / "Dockerfile").read_text())
RUNTIME = DOCKERFILE[-1]


def test_the_image_is_built_in_one_stage_and_run_from_another() -> None:
    assert len(DOCKERFILE) >= 2
    build = DOCKERFILE[0]
    assert build.name is not None
    assert any(args.startswith(f"--from={build.name} ") for args in RUNTIME.all("COPY")), (
        "the runtime stage copies nothing from the build stage"
    )
    # The runtime stage installs nothing itself: no compiler, no uv, no pip there.
    assert not [args for args in RUNTIME.all("RUN") if re.search(r"\b(pip|uv|apt-get)\b", args)]


def test_the_dependencies_are_the_locked_ones_without_the_dev_group() -> None:
    syncs = [shlex.split(args) for stage in DOCKERFILE[:-1] for args in stage.all("RUN")]
    syncs = [words for words in syncs if words[:2] == ["uv", "sync"]]
    assert syncs, "the build stage does not run uv sync"
    for words in syncs:
        assert "--frozen" in words, f"uv sync without --frozen: {words}"
        assert "--no-dev" in words, f"uv sync with the dev dependencies: {words}"
    # The project itself is installed into the environment, not linked to the build's /src.
    assert "--no-editable" in syncs[-1]
    copied = " ".join(DOCKERFILE[0].all("COPY"))
    assert "uv.lock" in copied and "pyproject.toml" in copied


def test_the_image_uses_the_uv_the_makefile_pins() -> None:
    pinned = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned is not None
    installs = " ".join(DOCKERFILE[0].all("RUN"))
    assert f"uv=={pinned.group(1)}" in installs


def test_tokenbot_runs_as_an_unprivileged_user() -> None:
    users = RUNTIME.all("USER")
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_the_container_serves_on_the_port_it_exposes_and_checks_its_health_there() -> None:
    argv = exec_form(RUNTIME.all("ENTRYPOINT")[-1]) + exec_form(RUNTIME.all("CMD")[-1])
    assert argv[:2] == ["tokenbot", "serve"]
    port = option(argv, "--port")
    assert option(argv, "--host") == "0.0.0.0"
    assert RUNTIME.all("EXPOSE") == [port]
    (health,) = RUNTIME.all("HEALTHCHECK")
    check = exec_form(health.partition("CMD")[2].strip())
    assert check[0] == "python", "the slim image has no curl"
    assert f"http://127.0.0.1:{port}/healthz" in check[-1]


def test_the_build_context_keeps_what_the_image_needs_and_drops_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.lstrip("*/"))
            for pattern in patterns
            for prefix in prefixes
        )

    sources = [
        word
        for stage in DOCKERFILE
        for args in stage.all("COPY")
        if not args.startswith("--from")
        for word in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not ignored(source), f".dockerignore drops {source}, which the image needs"
    for secret in (".venv", ".git", "tokenbot.db", "deploy/tokenbot.env", "deploy/.env"):
        assert ignored(secret), f".dockerignore lets {secret} into the build"


# -- deploy/compose.yml ------------------------------------------------------------------

COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
NGINX_CONF = (DEPLOY / "nginx.conf").read_text()


def per_replica_connections() -> int:
    """The most connections to PostgreSQL one process holds: the pool (a connection for
    each worker thread, and its overflow), the event loop's own, and the one that listens
    for revocations (storage.db.InvalidationListener)."""
    engine = make_engine("postgresql+psycopg://tokenbot@db.invalid/tokenbot")
    try:
        pool: Any = engine.pool
        return int(pool.size() + pool._max_overflow + ASYNC_CONNECTIONS + 1)
    finally:
        engine.dispose()


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match is not None and duration, f"not a compose duration: {duration}"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def nginx_proxies_to(variable: str) -> int:
    match = re.search(rf"set \${variable} tokenbot:(\d+);", NGINX_CONF)
    assert match is not None, f"nginx.conf sets no ${variable}"
    return int(match.group(1))


def test_compose_runs_replicas_behind_nginx_on_postgresql() -> None:
    assert set(SERVICES) == {"postgres", "migrate", "tokenbot", "nginx"}
    replicas = SERVICES["tokenbot"]["deploy"]["replicas"]
    assert 2 <= replicas <= 3
    assert "ports" not in SERVICES["tokenbot"], "replicas are reached through nginx only"
    assert "ports" not in SERVICES["postgres"]
    for name in ("tokenbot", "migrate"):
        context = (DEPLOY / SERVICES[name]["build"]).resolve()
        assert (context / "Dockerfile").samefile(ROOT / "Dockerfile")


def test_the_schema_is_migrated_once_before_the_replicas_start() -> None:
    migrate, tokenbot = SERVICES["migrate"], SERVICES["tokenbot"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert tokenbot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert tokenbot["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = tokenbot["environment"]["TOKENBOT_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert migrate["environment"]["TOKENBOT_DATABASE_URL"] == url


def test_postgresql_keeps_its_data_checks_its_health_and_admits_every_replica() -> None:
    postgres = SERVICES["postgres"]
    volume, _, target = postgres["volumes"][0].partition(":")
    assert volume in COMPOSE["volumes"], "the data is in a named volume"
    assert target == "/var/lib/postgresql/data"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    command = " ".join(postgres["command"])
    match = re.search(r"max_connections=(\d+)", command)
    assert match is not None, "PostgreSQL's default of 100 connections is too few"
    needed = SERVICES["tokenbot"]["deploy"]["replicas"] * per_replica_connections()
    assert int(match.group(1)) > needed


def test_a_replica_is_given_longer_to_stop_than_its_shutdown_takes() -> None:
    assert seconds(SERVICES["tokenbot"]["stop_grace_period"]) > SHUTDOWN_WINDOW


def test_nginx_reaches_the_replicas_on_the_ports_they_listen_on() -> None:
    tokenbot = SERVICES["tokenbot"]
    command = tokenbot["command"]
    assert command[0] == "serve"
    assert nginx_proxies_to("tokenbot_public") == int(option(command, "--port"))
    _, api_port = parse_listen(tokenbot["environment"]["TOKENBOT_API_LISTEN"])
    assert nginx_proxies_to("tokenbot_api") == api_port
    assert api_port != int(option(command, "--port")), "/api/v1/* has a listener of its own"
    # nginx waits for the replicas to be healthy: the image's check asks the port they use.
    assert RUNTIME.all("EXPOSE") == [option(command, "--port")]


def nginx_listen_port(variable: str) -> int:
    """The port of the nginx server that proxies to ``$variable``."""
    (server,) = [block for block in NGINX_CONF.split("\nserver {") if f"${variable} " in block]
    match = re.search(r"^\s*listen (\d+)", server, re.M)
    assert match is not None
    return int(match.group(1))


def test_nginx_publishes_its_public_server_and_its_internal_one_on_loopback_only() -> None:
    listens = {int(port) for port in re.findall(r"^\s*listen (\d+)", NGINX_CONF, re.M)}
    ports = {int(mapping.rsplit(":", 1)[1]): mapping for mapping in SERVICES["nginx"]["ports"]}
    assert set(ports) == listens
    public, internal = nginx_listen_port("tokenbot_public"), nginx_listen_port("tokenbot_api")
    assert public == 443 and re.search(r"listen 443 ssl;", NGINX_CONF), "Slack needs HTTPS"
    assert ports[internal].startswith("127.0.0.1:"), "the internal server is published"


def test_compose_names_only_files_that_exist() -> None:
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
        env_file = service.get("env_file")
        if env_file:
            # Made by the operator from the example, which holds no secret.
            assert (DEPLOY / f"{env_file}.example").exists()
    assert "conf.d/" in " ".join(SERVICES["nginx"]["volumes"])


def test_the_example_environment_names_real_settings_and_the_required_ones() -> None:
    text = (DEPLOY / "tokenbot.env.example").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))
    known = set(_ENV_NAMES.values())
    assert names <= known, f"unknown settings: {names - known}"
    for setting in _REQUIRED["serve"]:
        assert re.search(rf"^{_ENV_NAMES[setting]}=", text, re.M)


def test_the_replicas_trust_forwarded_addresses_from_their_own_network_only() -> None:
    front = COMPOSE["networks"]["front"]["ipam"]["config"][0]["subnet"]
    assert SERVICES["tokenbot"]["environment"]["FORWARDED_ALLOW_IPS"] == front
    assert set(SERVICES["nginx"]["networks"]) == {"front"}
    assert "front" not in SERVICES["postgres"]["networks"]
    assert COMPOSE["networks"]["back"]["internal"] is True


def test_the_readme_states_the_connections_the_code_opens() -> None:
    guide = (ROOT / "README.md").read_text().partition("## Deploying")[2].partition("\n## ")[0]
    assert guide, "the README has no Deploying section"
    per_replica = per_replica_connections()
    assert f"{per_replica} connections per replica" in guide
    assert f"{3 * per_replica} for three" in guide


# -- deploy/tokenbot.service -------------------------------------------------------------

UNIT_TEXT = (DEPLOY / "tokenbot.service").read_text()


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT_TEXT.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_runs_unprivileged_hardened_and_restarts_on_failure() -> None:
    unit = unit_settings()
    assert unit["User"] not in (["root"], ["0"])
    assert unit["EnvironmentFile"]
    assert unit["Restart"] == ["on-failure"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "tokenbot",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], f"{key}={value} expected"
    # The one writable place is the state directory, which is where it runs.
    assert unit["WorkingDirectory"] == ["/var/lib/tokenbot"]
    assert shlex.split(unit["ExecStart"][0])[1] == "serve"


def test_the_unit_stops_with_sigterm_and_waits_past_the_shutdown_window() -> None:
    unit = unit_settings()
    assert unit["KillSignal"] == ["SIGTERM"]
    assert seconds(unit["TimeoutStopSec"][0]) > SHUTDOWN_WINDOW


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # The unit names where tokenbot is installed on a server; here, this checkout's.
    tokenbot = Path(sys.executable).parent / "tokenbot"
    assert tokenbot.exists()
    unit = tmp_path / "tokenbot.service"
    unit.write_text(UNIT_TEXT.replace("/opt/tokenbot/.venv/bin/tokenbot", str(tokenbot)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on an unknown key or a bad value: it only warns, naming the file.
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if unit.name in line
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
