"""A process's configuration, read once from the environment (``CHILDTUNE_*``).

Every process of the service (API, worker, ``childtune up``) builds one :class:`Settings`;
below that boundary code takes plain arguments. Outside development, unsafe defaults are
refused at startup: ``CHILDTUNE_ENV=production`` with no API keys, or with the development
key, raises :class:`SettingsError` with the fix in its message.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core import env
from service.core.jobdir import ArtifactsLayout

__all__ = [
    "ALL_QUEUES",
    "DEFAULT_API_KEYS",
    "Settings",
    "SettingsError",
    "load_settings",
    "parse_api_keys",
    "queue_for",
    "state_dir",
]

# The key a development setup works with out of the box; production refuses it.
DEFAULT_API_KEYS = "childtune-dev-key:default"

MAX_RANKS_PER_QUEUE = 8
# Every queue a worker may consume: cpu-x1..x8 and gpu-x1..x8.
ALL_QUEUES: tuple[str, ...] = tuple(
    f"{kind}-x{n}" for kind in ("cpu", "gpu") for n in range(1, MAX_RANKS_PER_QUEUE + 1)
)


def queue_for(device: str, num_ranks: int) -> str:
    """The queue of a job's resource class: ``gpu-x2`` for 2 ranks on cuda/auto, ``cpu-x1`` ..."""
    return f"{'cpu' if device == 'cpu' else 'gpu'}-x{num_ranks}"


def state_dir() -> Path:
    """The local state folder of ``childtune up`` and the CLI: ``$CHILDTUNE_STATE`` or ``~/.childtune``."""
    return Path(os.environ.get(env.STATE) or "~/.childtune").expanduser()


class SettingsError(ValueError):
    """The environment does not describe a usable configuration (the message says what to set)."""


def parse_api_keys(text: str) -> dict[str, str]:
    """``"key:tenant,key2:tenant2"`` -> ``{key: tenant}``; raises ValueError naming the bad entry."""
    keys: dict[str, str] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        key, sep, tenant = entry.partition(":")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not tenant:
            raise ValueError(
                f"CHILDTUNE_API_KEYS: entry {entry.split(':')[0][:4] + '...'!r} must be KEY:TENANT "
                '(e.g. "k1:team-a,k2:team-b")'
            )
        if key in keys:
            raise ValueError(
                f"CHILDTUNE_API_KEYS: a key appears twice (tenants {keys[key]!r} and {tenant!r})"
            )
        keys[key] = tenant
    return keys


class Settings(BaseSettings):
    """Configuration of the API, the workers and the embedded stack (environment ``CHILDTUNE_*``)."""

    model_config = SettingsConfigDict(env_prefix=env.PREFIX, extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    artifacts: Path = Field(default_factory=lambda: state_dir() / "artifacts")
    api_keys: str = DEFAULT_API_KEYS
    queues: str = ",".join(ALL_QUEUES)
    max_upload_mb: float = Field(default=100.0, gt=0)
    allow_hub: bool = False
    # Folders of models the operator offers to every tenant (comma-separated); a job names a
    # model in them by its folder name (or its path). Nothing else on the server can be named.
    model_roots: str = ""
    # Workers: heartbeats, the reaper, shutdown.
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    kill_grace_s: float = Field(default=5.0, ge=0)
    soft_shutdown_s: float = Field(default=30.0, ge=0)
    # Jobs across machines (resources.nodes > 1; docs/deploy.md). The address other nodes reach
    # this worker on (its rendezvous endpoint when it is a job's node 0): empty = this host's
    # name resolved (socket.gethostbyname), else 127.0.0.1.
    node_addr: str = ""
    # How long a gang's reserved workers have to join before the reservation is released and the
    # job waits again; then torchrun's rendezvous gets as long again for every node to arrive.
    gang_reserve_s: float = Field(default=60.0, gt=0)
    rendezvous_timeout_s: float = Field(default=120.0, gt=0)
    # Longer than the longest job: an unacknowledged task is redelivered after this long.
    visibility_timeout_s: int = Field(default=7 * 24 * 3600, ge=60)
    # Webhooks (service/core/webhooks/). Internal addresses (loopback, link-local, private,
    # this machine's own) are refused unless inside one of these networks, e.g. "10.0.0.0/8".
    webhook_allow_networks: str = ""
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_retry_base_s: float = Field(default=1.0, gt=0)  # the first retry's delay, doubled each time
    webhook_retry_window_s: float = Field(default=3600.0, ge=0)  # then the delivery is given up

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @field_validator("queues")
    @classmethod
    def _queues_known(cls, value: str) -> str:
        names = [q.strip() for q in value.split(",") if q.strip()]
        if not names:
            raise ValueError("CHILDTUNE_QUEUES: give at least one queue, e.g. gpu-x1,gpu-x2")
        unknown = [q for q in names if q not in ALL_QUEUES]
        if unknown:
            raise ValueError(
                f"CHILDTUNE_QUEUES: unknown queue(s) {', '.join(unknown)}; queues are cpu-xN and gpu-xN, "
                f"N = 1..{MAX_RANKS_PER_QUEUE}"
            )
        return ",".join(names)

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if not entry:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"CHILDTUNE_WEBHOOK_ALLOW_NETWORKS: {entry[:60]!r} is not an IP network "
                    "(give CIDRs, e.g. 10.0.0.0/8,127.0.0.1/32)"
                ) from None
        return value

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.env == "production":
            keys = parse_api_keys(self.api_keys)
            if not keys:
                raise ValueError(
                    "CHILDTUNE_ENV=production needs API keys: set CHILDTUNE_API_KEYS=KEY:TENANT[,KEY:TENANT]"
                )
            if set(keys) & set(parse_api_keys(DEFAULT_API_KEYS)):
                raise ValueError(
                    "CHILDTUNE_ENV=production refuses the development API key: set CHILDTUNE_API_KEYS to "
                    "your own secret keys (e.g. $(openssl rand -hex 24):my-team)"
                )
        return self

    @property
    def tenants_by_key(self) -> dict[str, str]:
        return parse_api_keys(self.api_keys)

    @property
    def queue_list(self) -> list[str]:
        return self.queues.split(",")

    @property
    def jobs_dir(self) -> Path:
        return ArtifactsLayout(self.artifacts).jobs

    @property
    def files_dir(self) -> Path:
        return ArtifactsLayout(self.artifacts).files

    @property
    def experiments_dir(self) -> Path:
        return ArtifactsLayout(self.artifacts).experiments

    @property
    def model_root_list(self) -> list[Path]:
        """The model roots, each resolved (links followed) so containment checks are exact."""
        return [Path(p.strip()).expanduser().resolve() for p in self.model_roots.split(",") if p.strip()]

    @property
    def webhook_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks webhooks may reach although internal (``webhook_allow_networks``)."""
        entries = (e.strip() for e in self.webhook_allow_networks.split(","))
        return [ipaddress.ip_network(e, strict=False) for e in entries if e]

    @property
    def node_address(self) -> str:
        """Where other nodes reach this worker (``node_addr``, else this host's address)."""
        if self.node_addr.strip():
            return self.node_addr.strip()
        import socket

        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def load_settings() -> Settings:
    """Settings from the environment; a bad value raises :class:`SettingsError` naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"CHILDTUNE_{loc.upper()}: {msg}" if loc and "CHILDTUNE_" not in msg else msg)
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
