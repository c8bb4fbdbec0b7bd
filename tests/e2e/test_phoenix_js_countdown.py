"""The countdown sample (logic in a Python handler) with phoenix.js, through `chanctl serve`."""

import pytest

from tests.conftest import ROOT
from tests.support import SECRET, run_js
from chanctl.tokens import TokenSigner

pytestmark = pytest.mark.node

COUNTDOWN = ROOT / "sample_configs" / "countdown.yaml"


async def test_a_countdown_ticks_for_everyone_and_stops_with_its_starter(serve_process):
    # Run from the project root: sample_configs/ is not on sys.path, so this also shows that
    # `chanctl serve` finds countdown_app beside the config.
    served = serve_process(COUNTDOWN, env={"COUNTDOWN_TICK": "0.02"})
    signer = TokenSigner(SECRET)
    out = await run_js("""
const connect = (token) => { const s = new Socket(env.URL, { transport: WebSocket, params: { token } }); s.connect(); return s; };
const a = connect(env.T1), b = connect(env.T2);
const ra = a.channel("countdown:kitchen"), rb = b.channel("countdown:kitchen");
const ticks = [];
rb.on("tick", (p) => ticks.push(p.remaining));
const done = new Promise((ok) => rb.on("done", ok));
emit({ join: await until((ok) => ra.join().receive("ok", ok)) });
await until((ok) => rb.join().receive("ok", ok));
emit({ refused: await until((ok) => a.channel("countdown:garage").join().receive("error", ok)) });
emit({ started: await until((ok) => ra.push("start", { seconds: 3 }).receive("ok", ok)) });
emit({ busy: await until((ok) => rb.push("start", { seconds: 3 }).receive("error", ok)) });
await done;
emit({ ticks });
await until((ok) => ra.push("start", { seconds: 100 }).receive("ok", ok));
const c = connect(env.T2);
emit({ late_join: await until((ok) => c.channel("countdown:kitchen").join().receive("ok", ok)) });
const stopped = new Promise((ok) => rb.on("stopped", ok));
ra.leave();
await stopped;
emit({ stopped: true });
a.disconnect(); b.disconnect(); c.disconnect();
""", URL=served.url.removesuffix("/websocket"), T1=signer.mint(1), T2=signer.mint(2))
    assert out[0] == {"join": {}}
    assert out[1] == {"refused": {"reason": "unauthorized"}}
    assert out[2] == {"started": {"started": 1}}
    assert out[3] == {"busy": {"reason": "already running"}}
    assert out[4] == {"ticks": [3, 2, 1]}
    assert out[5]["late_join"]["by"] == 1 and 1 <= out[5]["late_join"]["remaining"] <= 100
    assert out[6] == {"stopped": True}
