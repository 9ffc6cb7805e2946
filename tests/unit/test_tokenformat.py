import re

import pytest

from storage import tokenformat
from storage.tokenformat import TokenKind

README_REGEX = r"\btb[us]_[0-9A-Za-z]{36}\b"


@pytest.mark.parametrize(
    ("kind", "prefix"), [(TokenKind.USER, "tbu_"), (TokenKind.SERVICE, "tbs_")]
)
def test_minted_token_has_kind_prefix_and_valid_checksum(kind: TokenKind, prefix: str) -> None:
    token = tokenformat.mint(kind)
    assert token.startswith(prefix)
    assert len(token) == 4 + 30 + 6
    assert tokenformat.has_valid_checksum(token)
    assert tokenformat.kind_of(token) == kind


def test_documented_regex_finds_tokens_in_text() -> None:
    token = tokenformat.mint(TokenKind.USER)
    found = re.findall(README_REGEX, f"export API_TOKEN={token} # do not share")
    assert found == [token]
    assert tokenformat.TOKEN_PATTERN.pattern == README_REGEX


def test_random_part_carries_at_least_160_bits() -> None:
    bits_per_char = 5.954  # log2(62)
    assert tokenformat.RANDOM_LENGTH * bits_per_char >= 160
    tokens = {tokenformat.mint(TokenKind.USER) for _ in range(2000)}
    assert len(tokens) == 2000


def test_any_single_character_change_breaks_the_checksum() -> None:
    token = tokenformat.mint(TokenKind.USER)
    for position in range(4, len(token)):
        replacement = "A" if token[position] != "A" else "B"
        altered = token[:position] + replacement + token[position + 1 :]
        assert not tokenformat.has_valid_checksum(altered), position


@pytest.mark.parametrize("text", ["", "tbu_short", "xyz_" + "a" * 36, "tbu_" + "a" * 37])
def test_malformed_strings_are_not_tokens(text: str) -> None:
    assert not tokenformat.has_valid_checksum(text)


def test_digest_is_sha256_and_hint_reveals_only_prefix_and_last_four() -> None:
    token = tokenformat.mint(TokenKind.USER)
    digest = tokenformat.digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert token not in digest
    hint = tokenformat.hint(token)
    assert hint == f"tbu_…{token[-4:]}"
    assert token[4:-4] not in hint


def test_tokens_are_found_in_text_wherever_a_person_may_paste_them() -> None:
    user, service = tokenformat.mint(TokenKind.USER), tokenformat.mint(TokenKind.SERVICE)
    text = f"`{user}` and ```{service}```, in italics _{user}_, as TOKEN={service}."
    assert tokenformat.find_tokens(text) == [user, service]  # each once, in order


def test_only_whole_tokens_with_a_matching_checksum_are_found() -> None:
    token = tokenformat.mint(TokenKind.USER)
    lookalike = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert tokenformat.find_tokens(f"{lookalike} tbu_{'x' * 36}") == []
    assert tokenformat.find_tokens(f"x{token} {token}9 {token[:-1]}") == []
    assert tokenformat.find_tokens("") == []
