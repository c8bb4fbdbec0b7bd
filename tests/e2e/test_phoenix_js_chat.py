"""The official phoenix.js client against `chanctl serve sample_configs/chat.yaml`, as a user runs it."""

import os
import subprocess
import sys

import pytest

from tests.conftest import CHAT
from tests.support import SECRET, run_js

pytestmark = pytest.mark.node


def cli_token(user: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "chanctl", "token", "--user", user, "--config", str(CHAT)],
        capture_output=True, text=True, check=True, env={**os.environ, "CHANCTL_SECRET": SECRET},
    )
    return result.stdout.strip()


CHAT_SCENARIO = """
const connect = (token) => {
  const socket = new Socket(env.URL, { transport: WebSocket, params: { token } });
  socket.connect();
  return socket;
};
const ann = connect(env.T42), bob = connect(env.T7);
const annRoom = ann.channel("room:42"), bobRoom = bob.channel("room:42");
const bobGot = new Promise((ok) => bobRoom.on("new_msg", ok));
const annGot = new Promise((ok) => annRoom.on("new_msg", ok));
await until((ok) => bobRoom.join().receive("ok", ok));
emit({ joined: await until((ok) => annRoom.join().receive("ok", ok)) });
emit({ reply: await until((ok) => annRoom.push("new_msg", { body: "hello" }).receive("ok", ok)) });
emit({ ann: await annGot, bob: await bobGot });
emit({ blank: await until((ok) => annRoom.push("new_msg", { body: "" }).receive("error", ok)) });
const intruder = connect(env.T99);
emit({ refused: await until((ok) => intruder.channel("room:42").join().receive("error", ok)) });
const forged = new Socket(env.URL, { transport: WebSocket, params: { token: env.FORGED }, reconnectAfterMs: () => 60000 });
forged.connect();
emit({ forged: await until((ok) => forged.onError(() => ok(forged.isConnected()))) });
for (const s of [ann, bob, intruder, forged]) s.disconnect();
"""


async def test_phoenix_js_chats_through_chanctl_serve(serve_process):
    served = serve_process(CHAT)
    t42 = cli_token("42")
    forged = t42[:-4] + ("AAAA" if not t42.endswith("AAAA") else "BBBB")
    out = await run_js(
        CHAT_SCENARIO,
        URL=served.url.removesuffix("/websocket"), T42=t42, T7=cli_token("7"), T99=cli_token("99"), FORGED=forged,
    )
    joined, reply, got, blank, refused, forged_result = out
    assert joined == {"joined": {}}
    assert reply == {"reply": {}}
    for who in ("ann", "bob"):
        message = got[who]
        assert message["body"] == "hello" and message["user_id"] == 42
        assert message["id"] and message["inserted_at"].endswith("Z")
    assert got["ann"]["id"] == got["bob"]["id"]
    assert blank == {"blank": {"errors": {"body": ["can't be blank"]}}}
    assert refused == {"refused": {"reason": "unauthorized"}}
    assert forged_result == {"forged": False}
