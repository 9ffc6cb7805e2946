"""Domain errors. Each carries one plain sentence a person can act on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.tokens import TokenInfo


class TokenbotError(Exception):
    """Base class: ``str(error)`` is safe to show to the person who caused it."""


class InvalidName(TokenbotError):
    pass


class NameTaken(TokenbotError):
    pass


class TokenNotFound(TokenbotError):
    pass


class AlreadyRotated(TokenbotError):
    """A rotation replaced the token already (R18): only its replacement rotates."""


class RequestNotFound(TokenbotError):
    """No such service-token request in the organization."""


class ServiceUserNotFound(TokenbotError):
    """No such service user in the organization."""


class NotAllowed(TokenbotError):
    """The member may not do this to that token (an admin might)."""


class PolicyForbids(TokenbotError):
    """The organization's policy forbids it, whoever asks."""


@dataclass
class CapReached(TokenbotError):
    cap: int
    active: list[TokenInfo] = field(default_factory=list)
    per: str = "member"  # or "organization", for service tokens (R8)

    def __str__(self) -> str:
        # Above the cap once an admin has lowered it: more than one must go.
        over = len(self.active) - self.cap + 1
        revoke = f"Revoke {'one' if over <= 1 else over} to make room."
        if self.per == "organization":
            return (
                f"The workspace already has {len(self.active)} active service tokens, and the "
                f"limit is {self.cap} per organization. {revoke}"
            )
        return (
            f"You already have {len(self.active)} active tokens, and the limit is {self.cap} "
            f"per member. {revoke}"
        )


class InvalidField(TokenbotError):
    """Input that cannot be accepted, for one named field of a form."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidFields(InvalidField):
    """Input that cannot be accepted, for each field of ``errors`` (field -> sentence):
    a form is answered on every field at fault at once."""

    def __init__(self, errors: dict[str, str]) -> None:
        field, message = next(iter(errors.items()))
        super().__init__(field, message)
        self.errors = dict(errors)


class AlreadyDecided(TokenbotError):
    """The request was decided (or cancelled, or expired) before this attempt."""


class WebhookNotFound(TokenbotError):
    """No such webhook endpoint in the organization (or it was removed already)."""
