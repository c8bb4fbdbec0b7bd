import string

import pytest

from chanctl.errors import TokenExpired, TokenInvalid, TokenMissing
from chanctl.tokens import TokenSigner

SECRET = "s" * 40


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_round_trip_carries_user_and_claims():
    signer = TokenSigner(SECRET)
    token = signer.mint(42, {"role": "admin", "level": 3})
    verified = signer.verify(token)
    assert verified.user_id == 42
    assert verified.claims == {"id": 42, "role": "admin", "level": 3}


def test_string_user_ids_stay_strings():
    signer = TokenSigner(SECRET)
    assert signer.verify(signer.mint("ann")).user_id == "ann"


@pytest.mark.parametrize("position", [0, 10, -3])
def test_tampering_is_a_bad_signature(position):
    signer = TokenSigner(SECRET)
    token = signer.mint(42)
    i = position % len(token)
    forged = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    with pytest.raises(TokenInvalid):
        signer.verify(forged)


def test_wrong_salt_and_wrong_secret_are_bad_signatures():
    token = TokenSigner(SECRET, salt="user socket").mint(42)
    with pytest.raises(TokenInvalid, match="bad signature"):
        TokenSigner(SECRET, salt="admin socket").verify(token)
    with pytest.raises(TokenInvalid, match="bad signature"):
        TokenSigner("t" * 40).verify(token)


@pytest.mark.parametrize("token", [None, ""])
def test_missing(token):
    with pytest.raises(TokenMissing):
        TokenSigner(SECRET).verify(token)


@pytest.mark.parametrize("token", ["garbage", "a.b", "a b.c.d", "x" * 10 + ".." + "y"])
def test_malformed(token):
    with pytest.raises(TokenInvalid, match="malformed"):
        TokenSigner(SECRET).verify(token)


def test_expiry_through_an_injected_clock_reports_age_and_limit():
    clock = Clock()
    signer = TokenSigner(SECRET, max_age=3600, clock=clock)
    token = signer.mint(42)
    clock.now += 3600
    assert signer.verify(token).age == 3600
    clock.now += 61
    with pytest.raises(TokenExpired) as info:
        signer.verify(token)
    assert info.value.age == 3661 and info.value.max_age == 3600
    assert "1h 1m exceeds the limit of 1h" in str(info.value)


def test_ttl_shortens_but_never_extends_the_life():
    clock = Clock()
    signer = TokenSigner(SECRET, max_age=3600, clock=clock)
    short = signer.mint(1, ttl=60)
    long = signer.mint(1, ttl=10 * 3600)
    clock.now += 61
    with pytest.raises(TokenExpired):
        signer.verify(short)
    clock.now += 3600
    with pytest.raises(TokenExpired):
        signer.verify(long)


def test_a_token_from_the_future_is_invalid():
    clock = Clock()
    token = TokenSigner(SECRET, clock=clock).mint(1)
    clock.now -= 3600
    with pytest.raises(TokenInvalid, match="future"):
        TokenSigner(SECRET, clock=clock).verify(token)


@pytest.mark.parametrize("ttl", ["15m", True, -5, None])
def test_a_ttl_claim_that_is_not_a_positive_number_fails_closed(ttl):
    """Issue 16: `--claim ttl=15m` was silently ignored, so the token lived the whole max_age."""
    signer = TokenSigner(SECRET, max_age=14 * 86400)
    token = signer.mint(1, {"ttl": ttl})
    if ttl is None:
        assert signer.verify(token).max_age == 14 * 86400  # no ttl claim at all: max_age
        return
    with pytest.raises(TokenInvalid) as info:
        signer.verify(token)
    assert "the ttl claim must be a number of seconds" in str(info.value)


def test_a_token_with_long_claims_is_compressed_and_still_verifies():
    """Issue 16: itsdangerous compresses a long payload (a leading '.'), which chanctl's own format
    check then refused as not a chanctl token."""
    signer = TokenSigner(SECRET)
    token = signer.mint(1, {"tags": ["editor"] * 200})
    assert token.startswith(".")
    assert signer.verify(token).claims["tags"] == ["editor"] * 200
    with pytest.raises(TokenInvalid):
        signer.verify(token + "\n")  # the shape is matched whole


def test_a_token_has_one_spelling():
    """The last character of a base64url part carries 2 or 4 spare bits that decoding ignores:
    every other spelling of the same bytes is refused, in each of the three parts."""
    signer = TokenSigner(SECRET)
    alphabet = string.ascii_letters + string.digits + "-_"
    for user in range(12):  # claims of several lengths: parts of length 2 and 3 mod 4
        token = signer.mint(user, {"pad": "x" * user})
        parts = token.split(".")
        for index, part in enumerate(parts):
            if not part:
                continue  # the empty part before a compressed payload's leading "."
            for char in alphabet.replace(part[-1], ""):
                respelled = ".".join(parts[:index] + [part[:-1] + char] + parts[index + 1:])
                with pytest.raises(TokenInvalid):
                    signer.verify(respelled)


def test_tokens_are_itsdangerous_tokens_both_ways():
    """The verifier keys its HMAC once and reuses one signer (a connect's token check is hot);
    the tokens stay those of a stock URLSafeTimedSerializer, both ways, salts kept apart."""
    from itsdangerous import URLSafeTimedSerializer

    for salt in ("user socket", "another salt"):
        stock = URLSafeTimedSerializer(SECRET, salt=salt)  # stamps the real time, as the signer below
        signer = TokenSigner(SECRET, salt=salt)
        assert signer.verify(stock.dumps({"id": 7, "x": "y" * 300})).claims == {"id": 7, "x": "y" * 300}
        assert stock.loads(signer.mint(7, {"a": 1})) == {"a": 1, "id": 7}
        for _ in range(2):  # the second time through the keyed HMAC and the derived key kept
            with pytest.raises(TokenInvalid):
                TokenSigner(SECRET, salt=salt + "!").verify(signer.mint(7))
