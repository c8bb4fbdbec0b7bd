"""The unmodified phoenix.js client and token lifecycle: warning, in-band refresh, 4401 then reconnect."""

from __future__ import annotations

import pytest

from chanctl.tokens import TokenSigner
from tests.support import SECRET, run_js

pytestmark = pytest.mark.node

YAML = """
auth: {secret: "${CHANCTL_SECRET}", expiry_warning: 1h, expiry_grace: 0.1s}
topics:
  "room:{id}": {join: true}
"""

SCENARIO = """
// A: warned at once (its token is inside the warning window), refreshes on its joined channel.
const a = new Socket(env.URL, { transport: WebSocket, params: { token: env.A_SHORT } });
const warned = new Promise((ok) => a.onMessage((m) => m.topic === "phoenix" && m.event === "token_expiring" && ok(m.payload)));
a.connect();
const roomA = a.channel("room:1");
await until((ok) => roomA.join().receive("ok", ok));
emit({ warned: await warned });
emit({ refreshed: await until((ok) => roomA.push("access_token", { access_token: env.A_LONG }).receive("ok", ok)) });
emit({ wrong: await until((ok) => roomA.push("access_token", { access_token: env.OTHER }).receive("error", ok)) });

// B: never refreshes; closed with 4401, reconnects through its params function with a fresh token.
const tokens = [env.B_SHORT, env.B_LONG];
let calls = 0;
const b = new Socket(env.URL, { transport: WebSocket, params: () => ({ token: tokens[Math.min(calls++, 1)] }) });
const closed = new Promise((ok) => b.onClose((e) => ok({ code: e.code, reason: e.reason })));
b.connect();
const roomB = b.channel("room:2");
let joins = 0;
const rejoined = new Promise((ok) => roomB.join().receive("ok", () => { joins += 1; if (joins === 2) ok(joins); }));
emit({ closed: await closed });
emit({ rejoined: await rejoined, calls });
a.disconnect(); b.disconnect();
"""


async def test_phoenix_js_refreshes_in_band_and_reconnects_after_4401(make_server):
    signer = TokenSigner(SECRET)
    async with make_server(YAML) as server:
        out = await run_js(
            SCENARIO, URL=server.url.removesuffix("/websocket"),
            A_SHORT=signer.mint(7, ttl=600), A_LONG=signer.mint(7, ttl=7200), OTHER=signer.mint(8),
            B_SHORT=signer.mint(9, ttl=5), B_LONG=signer.mint(9),
        )
    warned, refreshed, wrong, closed, rejoined = out
    assert 590 <= warned["warned"]["expires_in"] <= 600
    assert 7190 <= refreshed["refreshed"]["expires_in"] <= 7200
    assert wrong["wrong"]["reason"] == "wrong user"
    assert closed == {"closed": {"code": 4401, "reason": "token expired"}}
    assert rejoined["rejoined"] == 2 and rejoined["calls"] >= 2
    assert server.sessions.stats.expired == 1
