"""One settings object, read from the environment and validated at start (SPEC §6)."""

from __future__ import annotations

from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SLACK_API_URL = "https://slack.com/api/"
Mode = Literal["serve", "socket", "sweep", "db", "demo"]

_ENV_NAMES = {
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_client_id": "SLACK_CLIENT_ID",
    "slack_client_secret": "SLACK_CLIENT_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN",
    "slack_api_url": "SLACK_API_URL",
    "database_url": "TOKENBOT_DATABASE_URL",
    "command": "TOKENBOT_COMMAND",
    "resource_servers": "TOKENBOT_RESOURCE_SERVERS",
    "sweep_interval": "TOKENBOT_SWEEP_INTERVAL",
    "profile_max_age": "TOKENBOT_PROFILE_MAX_AGE",
    "approvals_channel": "TOKENBOT_APPROVALS_CHANNEL",
    "approver_group": "TOKENBOT_APPROVER_GROUP",
    "api_listen": "TOKENBOT_API_LISTEN",
    "http_max_body": "TOKENBOT_HTTP_MAX_BODY",
    "http_header_timeout": "TOKENBOT_HTTP_HEADER_TIMEOUT",
    "http_body_timeout": "TOKENBOT_HTTP_BODY_TIMEOUT",
    "http_max_connections": "TOKENBOT_HTTP_MAX_CONNECTIONS",
    "introspection_max_failures": "TOKENBOT_INTROSPECTION_MAX_FAILURES",
    "introspection_failure_window": "TOKENBOT_INTROSPECTION_FAILURE_WINDOW",
    "webhooks_allow_loopback": "TOKENBOT_WEBHOOKS_ALLOW_LOOPBACK",
    "log_format": "TOKENBOT_LOG_FORMAT",
}


def _env(field: str) -> AliasChoices:
    return AliasChoices(_ENV_NAMES[field], field)


class SettingsError(Exception):
    """A setting is missing or invalid; ``str()`` is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_env("slack_signing_secret")
    )
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("slack_bot_token"))
    slack_client_id: str | None = Field(None, validation_alias=_env("slack_client_id"))
    slack_client_secret: SecretStr | None = Field(
        None, validation_alias=_env("slack_client_secret")
    )
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("slack_app_token"))
    slack_api_url: str = Field(SLACK_API_URL, validation_alias=_env("slack_api_url"))
    database_url: str = Field("sqlite:///tokenbot.db", validation_alias=_env("database_url"))
    command: str = Field("/token", validation_alias=_env("command"))
    resource_servers: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("resource_servers")
    )
    # Seconds between sweeps (reminders, expiry) and deliveries of what they queue.
    sweep_interval: int = Field(300, ge=5, validation_alias=_env("sweep_interval"))
    # Seconds a member's cached Slack profile (role, groups) may be used before it is
    # fetched again for introspection (R1).
    profile_max_age: int = Field(900, ge=0, validation_alias=_env("profile_max_age"))
    # Where service-token requests go (a channel id), else to each approver by DM; and
    # who approves: the members of this user group (its handle), else admins and owners.
    approvals_channel: str | None = Field(None, validation_alias=_env("approvals_channel"))
    approver_group: str | None = Field(None, validation_alias=_env("approver_group"))
    # The HTTP edge of `tokenbot serve` (README, "Security limits"). `host:port` of a
    # separate listener for /api/v1/*, which the public one then no longer carries.
    api_listen: Annotated[tuple[str, int] | None, NoDecode] = Field(
        None, validation_alias=_env("api_listen")
    )
    # Bytes a request body may have; seconds for a request's head, then for its body, to
    # arrive; connections (and requests in progress) per listener, beyond which it says 503.
    http_max_body: int = Field(1024 * 1024, ge=1024, validation_alias=_env("http_max_body"))
    http_header_timeout: float = Field(
        10, gt=0, le=300, validation_alias=_env("http_header_timeout")
    )
    http_body_timeout: float = Field(30, gt=0, le=600, validation_alias=_env("http_body_timeout"))
    http_max_connections: int = Field(2048, ge=16, validation_alias=_env("http_max_connections"))
    # Failed resource-server authentications a client address may make on introspection
    # within a window of this many seconds; then it is refused (429) until the window ends.
    introspection_max_failures: int = Field(
        10, ge=1, validation_alias=_env("introspection_max_failures")
    )
    introspection_failure_window: int = Field(
        60, ge=1, validation_alias=_env("introspection_failure_window")
    )
    # Whether a webhook endpoint may be plain http on a loopback address (a receiver on
    # the same host, in development and tests); every other endpoint must be https.
    webhooks_allow_loopback: bool = Field(False, validation_alias=_env("webhooks_allow_loopback"))
    # How `serve` and `socket` write their log lines: text, or one JSON object a line.
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("log_format"))

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            backend = sa.make_url(value).get_backend_name()
        except sa.exc.ArgumentError:
            raise ValueError("is not a database URL, such as sqlite:///tokenbot.db") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"names {backend!r}; use sqlite:// or postgresql://")
        if backend == "postgresql" and sa.make_url(value).drivername == "postgresql":
            value = value.replace("postgresql://", "postgresql+psycopg://", 1)
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if not value.startswith("/") or len(value) < 2 or any(c.isspace() for c in value):
            raise ValueError("must be a slash command such as /token")
        return value

    @field_validator("resource_servers", mode="before")
    @classmethod
    def _resource_servers(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        servers: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in value.split(","))):
            server_id, sep, secret = pair.partition(":")
            if not sep or not server_id or not secret:
                raise ValueError("must be id:secret pairs separated by commas")
            servers[server_id] = secret
        return servers

    @field_validator("api_listen", mode="before")
    @classmethod
    def _api_listen(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return parse_listen(value) if value.strip() else None

    @property
    def multi_workspace(self) -> bool:
        """Installed through OAuth in any number of workspaces (SLACK_CLIENT_ID and
        SLACK_CLIENT_SECRET), rather than one workspace's SLACK_BOT_TOKEN."""
        return bool(self.slack_client_id and self.slack_client_secret)

    def require(self, mode: Mode) -> None:
        """Raise SettingsError naming the first variable ``mode`` needs and lacks."""
        if self.slack_client_id and not self.slack_client_secret:
            raise SettingsError("SLACK_CLIENT_SECRET: required with SLACK_CLIENT_ID")
        if self.slack_client_secret and not self.slack_client_id:
            raise SettingsError("SLACK_CLIENT_ID: required with SLACK_CLIENT_SECRET")
        if self.multi_workspace and self.slack_bot_token:
            raise SettingsError(
                "SLACK_BOT_TOKEN: set it or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET, not both"
            )
        for field in _REQUIRED.get(mode, ()):
            if field == "slack_bot_token" and mode == "serve" and self.multi_workspace:
                continue  # each installation brings its own
            if not getattr(self, field):
                hint = ""
                if field == "slack_bot_token" and self.slack_client_id:
                    hint = " (multi-workspace OAuth install works with `tokenbot serve`)"
                raise SettingsError(f"{_ENV_NAMES[field]}: required for `tokenbot {mode}`{hint}")
        bot_token = self.slack_bot_token.get_secret_value() if self.slack_bot_token else None
        if bot_token is not None and not bot_token.startswith("xoxb-"):
            raise SettingsError("SLACK_BOT_TOKEN: must be a bot token starting with xoxb-")
        app_token = self.slack_app_token.get_secret_value() if self.slack_app_token else None
        if mode == "socket" and app_token is not None and not app_token.startswith("xapp-"):
            raise SettingsError("SLACK_APP_TOKEN: must be an app-level token starting with xapp-")


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:3001`` for IPv6) as a pair, or ValueError saying what's wrong."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isascii() or not port.isdigit() or len(port) > 5:
        raise ValueError("must be host:port, such as 127.0.0.1:3001")
    if not 0 < int(port) < 65536:
        raise ValueError("the port must be between 1 and 65535")
    return (host, int(port))


_REQUIRED: dict[str, tuple[str, ...]] = {
    "serve": ("slack_signing_secret", "slack_bot_token"),
    "socket": ("slack_bot_token", "slack_app_token"),
}


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and ``overrides``), or SettingsError in one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        name = _ENV_NAMES.get(field, field.upper())
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{name}: {message}") from None
