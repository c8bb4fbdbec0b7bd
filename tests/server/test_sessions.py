"""Token lifecycle on open sockets: warning, in-band refresh, expiry close, revocation."""

from __future__ import annotations

import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chanctl.server.metrics import render_metrics
from chanctl.server.sessions import TOKEN_EXPIRED, TOKEN_REVOKED, Grant, Revocations
from chanctl.tokens import TokenSigner
from tests.support import SECRET, TIMEOUT, RawClient

YAML = """
auth: {{secret: "${{CHANCTL_SECRET}}", expiry_warning: {warning}, expiry_grace: {grace}}}
topics:
  "room:{{id}}": {{join: true}}
"""


def server_with(make_server, warning: str = "0", grace: str = "0.1s"):
    return make_server(YAML.format(warning=warning, grace=grace))


def signer(ahead: float = 0.0) -> TokenSigner:
    """A signer of the test secret; ``ahead`` stamps tokens that many seconds later than now."""
    return TokenSigner(SECRET, clock=lambda: time.time() + ahead)


async def closed_with(client: RawClient) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason."""
    try:
        while True:
            await client.recv(TIMEOUT)
    except ConnectionClosed:
        pass
    return client.ws.close_code, client.ws.close_reason


# -- the revocation list, with an injected clock ------------------------------------------------


def test_revocations_refuse_until_the_token_would_have_expired():
    now = [1000.0]
    revoked = Revocations(lambda: now[0])
    grant = Grant(user_id=7, signed_at=990.0, expires_at=1100.0, key="k1")
    assert not revoked.refuses(grant)
    revoked.apply({"token": "k1", "until": 1100.0})
    revoked.apply({"token": "k1", "until": 1100.0})  # idempotent
    assert revoked.refuses(grant)
    assert not revoked.refuses(Grant(7, 995.0, 1100.0, "k2"))
    now[0] = 1100.0
    assert not revoked.refuses(grant)
    revoked.apply({"user": 99, "before": 1100.0, "until": 1200.0})  # also purges what ran out
    assert revoked.entries() == [{"user": 99, "before": 1100.0, "until": 1200.0}]


def test_a_user_revocation_spares_tokens_signed_after_it():
    revoked = Revocations(lambda: 1000.0)
    revoked.apply({"user": 7, "before": 1000.0, "until": 2000.0})
    assert revoked.refuses(Grant(7, 1000.0, 1500.0, "a"))
    assert not revoked.refuses(Grant(7, 1001.0, 1500.0, "b"))
    assert not revoked.refuses(Grant(8, 900.0, 1500.0, "c"))
    assert not revoked.refuses(Grant("7", 900.0, 1500.0, "d"))  # ids compare as JSON values
    with pytest.raises(ValueError):
        revoked.apply({"until": 5})


# -- on a live server --------------------------------------------------------------------------


async def test_the_warning_comes_on_topic_phoenix_and_a_refresh_moves_the_expiry(make_server):
    async with server_with(make_server, warning="1h", grace="1h") as server:
        short = signer().mint(7, ttl=60)
        async with await RawClient.connect(server.url, short) as client:
            warning = await client.recv()
            assert warning[:4] == [None, None, "phoenix", "token_expiring"]
            assert 58 <= warning[4]["expires_in"] <= 60
            fresh = signer().mint(7, ttl=7200)
            reply = await client.call([None, "1", "phoenix", "access_token", {"access_token": fresh}])
            assert reply[:4] == [None, "1", "phoenix", "phx_reply"]
            assert reply[4]["status"] == "ok" and 7190 <= reply[4]["response"]["expires_in"] <= 7200
            (connection,) = server.connections
            assert connection.session is not None and connection.session.expires_at > time.time() + 7000
            # Refreshed past the warning window: no second warning comes.
            await client.nothing()
            # On a joined channel too, answered with its join_ref.
            await client.call(["3", "3", "room:1", "phx_join", {}])
            reply = await client.call(["3", "4", "room:1", "access_token", {"access_token": fresh}])
            assert reply[0] == "3" and reply[4]["status"] == "ok"
        assert server.sessions.stats.refreshes == {"ok": 2, "error": 0}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: signer().mint(8), "wrong user"),
        (lambda: signer().mint(7)[:-3] + "AAA", "token invalid"),
        (lambda: TokenSigner(SECRET, clock=lambda: time.time() - 10).mint(7, ttl=5), "token expired"),
        (lambda: 42, 'access_token takes {"access_token": TOKEN}'),
    ],
)
async def test_a_bad_refresh_is_an_error_reply_and_changes_nothing(make_server, token, reason):
    async with server_with(make_server) as server:
        async with await RawClient.connect(server.url, signer().mint(7)) as client:
            (connection,) = server.connections
            before = connection.session.expires_at
            reply = await client.call([None, "1", "phoenix", "access_token", {"access_token": token()}])
            assert reply[4]["status"] == "error" and reply[4]["response"]["reason"] == reason
            assert connection.session.expires_at == before
        assert server.sessions.stats.refreshes["error"] == 1


async def test_an_unrefreshed_socket_closes_with_4401_after_the_grace(make_server):
    async with server_with(make_server, grace="0.1s") as server:
        async with await RawClient.connect(server.url, signer().mint(7, ttl=2)) as client:
            await client.call(["1", "1", "room:1", "phx_join", {}])
            assert await closed_with(client) == (TOKEN_EXPIRED, "token expired")
        assert server.sessions.stats.expired == 1


async def test_revoking_a_token_closes_its_sockets_and_refuses_it(make_server):
    async with server_with(make_server) as server:
        token, other = signer().mint(7), signer().mint(7, {"device": "b"})
        admin = signer().mint(1, {"admin": True})
        async with await RawClient.connect(server.url, token) as victim, \
                await RawClient.connect(server.url, other) as spared, \
                await RawClient.connect(server.url, admin) as ops:
            await ops.call(["1", "1", "chanctl:admin", "phx_join", {}])
            reply = await ops.call(["1", "2", "chanctl:admin", "revoke", {"token": token}])
            assert reply[4]["status"] == "ok" and reply[4]["response"]["closed"] == 1
            assert await closed_with(victim) == (TOKEN_REVOKED, "token revoked")
            assert (await spared.call([None, "5", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
            with pytest.raises(websockets.InvalidStatus) as refused:
                await RawClient.connect(server.url, token)
            assert refused.value.response.status_code == 403
            assert b"token revoked" in refused.value.response.body
            bad = await ops.call(["1", "3", "chanctl:admin", "revoke", {"token": "nope"}])
            assert bad[4] == {"status": "error", "response": {"reason": "token invalid", "detail": bad[4]["response"]["detail"]}}
        assert server.sessions.stats.revocations == 1 and server.sessions.stats.revoked_closed == 1
        metrics = render_metrics(server)[0].decode()
        for line in ("chanctl_token_revocations_total 1.0", "chanctl_token_revoked_closed_total 1.0",
                     "chanctl_token_revoked_refused_total 1.0", 'chanctl_token_refreshes_total{outcome="ok"} 0.0'):
            assert line in metrics


async def test_revoking_a_user_spares_others_and_later_tokens(make_server):
    async with server_with(make_server) as server:
        admin = signer().mint(1, {"admin": True})
        async with await RawClient.connect(server.url, signer().mint(7)) as seven, \
                await RawClient.connect(server.url, signer().mint(8)) as eight, \
                await RawClient.connect(server.url, admin) as ops:
            await ops.call(["1", "1", "chanctl:admin", "phx_join", {}])
            reply = await ops.call(["1", "2", "chanctl:admin", "revoke", {"user": 7}])
            assert reply[4]["response"]["closed"] == 1
            assert (await closed_with(seven))[0] == TOKEN_REVOKED
            assert (await eight.call([None, "5", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
            # A token signed after the revocation (stamped a second or more later) is accepted.
            async with await RawClient.connect(server.url, signer(ahead=2).mint(7)) as again:
                assert (await again.call([None, "6", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
            # A refresh with a revoked token is refused.
            old = TokenSigner(SECRET, clock=lambda: time.time() - 3).mint(7)
            refused = await eight.call([None, "7", "phoenix", "access_token", {"access_token": old}])
            assert refused[4]["response"]["reason"] == "token revoked"
            wrong = await ops.call(["1", "3", "chanctl:admin", "revoke", {"user": 7, "token": "x"}])
            assert wrong[4]["response"] == {"reason": "revoke takes {token: string} or {user: id}"}


async def test_the_admin_plane_shows_each_sockets_expiry(make_server):
    async with server_with(make_server) as server:
        admin = signer().mint(1, {"admin": True})
        async with await RawClient.connect(server.url, admin) as ops:
            await ops.call(["1", "1", "chanctl:admin", "phx_join", {}])
            snapshot = await ops.recv_until(lambda f: f[3] == "snapshot")
            (me,) = snapshot[4]["connections"]
            assert me["expires_at"] > time.time() + 13 * 86400


def test_a_topic_cannot_declare_the_access_token_event():
    from chanctl.config.load import load_config_text
    from chanctl.errors import ConfigError

    yaml = 'auth: {secret: "${CHANCTL_SECRET}"}\ntopics:\n  "room:{id}": {join: true, events: {access_token: {do: noop}}}\n'
    with pytest.raises(ConfigError) as problems:
        load_config_text(yaml, "<t>", {"CHANCTL_SECRET": SECRET})
    assert "'access_token' is reserved" in str(problems.value)
