"""The token format: mint, checksum, digest and display hint.

A token reads ``tbu_`` (user) or ``tbs_`` (service), then 30 random base62 characters
(about 178 bits), then 6 base62 characters holding the CRC32 of everything before them.
A scanner can recognise a leaked token offline with :data:`TOKEN_PATTERN` and
:func:`has_valid_checksum`, without asking the server.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib
from enum import StrEnum

ALPHABET = string.digits + string.ascii_letters  # base62
RANDOM_LENGTH = 30
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits
TOKEN_PATTERN = re.compile(r"\btb[us]_[0-9A-Za-z]{36}\b")
# What :func:`find_tokens` looks for in a message: the same shape, with only letters and
# digits for neighbours, so a token set in italics (``_tbu_…_``) is found too.
_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])tb[us]_[0-9A-Za-z]{36}(?![0-9A-Za-z])")


class TokenKind(StrEnum):
    USER = "user"
    SERVICE = "service"


PREFIXES: dict[TokenKind, str] = {TokenKind.USER: "tbu_", TokenKind.SERVICE: "tbs_"}


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        chars.append(ALPHABET[rest])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def mint(kind: TokenKind) -> str:
    """Return a new random token of ``kind``. The only place tokens are created."""
    body = PREFIXES[kind] + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + _checksum(body)


def has_valid_checksum(token: str) -> bool:
    """True when ``token`` has the shape of a tokenbot token and its checksum matches."""
    if not TOKEN_PATTERN.fullmatch(token):
        return False
    return _checksum(token[:-CHECKSUM_LENGTH]) == token[-CHECKSUM_LENGTH:]


def find_tokens(text: str) -> list[str]:
    """The tokens in ``text`` whose checksum matches, each once, in order of appearance.

    Pure and offline: a look-alike whose checksum does not match is dropped here, so it
    never costs a lookup (R19)."""
    found = (match.group() for match in _IN_TEXT.finditer(text))
    return list(dict.fromkeys(token for token in found if has_valid_checksum(token)))


def kind_of(token: str) -> TokenKind | None:
    """The kind a well-formed token claims by its prefix, or None."""
    for kind, prefix in PREFIXES.items():
        if token.startswith(prefix):
            return kind
    return None


def digest(token: str) -> str:
    """SHA-256 hex digest: the only form of a token that is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hint(token: str) -> str:
    """What a person sees of a stored token: its prefix and last four characters."""
    return f"{token[:4]}…{token[-4:]}"
