"""phoenix.js ``Presence`` against chanctl (PROTOCOL.md §10 item 49): several users, several sessions
per user, updates, leaves, a forced disconnect (1001: the clients reconnect and rejoin) and a
channel crash (the client rejoins). At every checkpoint each client's ``Presence.list()`` must equal
the server's list, fetched through the channel at that moment."""

import pytest

from chanctl.channel import Channel, ok
from chanctl.protocol.router import Router
from chanctl.server.runtime import ChannelServer
from tests.support import run_js

pytestmark = pytest.mark.node

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: true
    presence: {meta: {typing: false%s}, batch: %s}
"""
PAD = ', pad: "%s"' % ("x" * 20_000)
"""Every list then outgrows a WebSocket fragment: a window's joiners get it as one shared body
between their own first and last fragments (chanctl.server.wire.FrameEncoder.around)."""


class RoomChannel(Channel):
    """The room of the scenario: presence from the config, plus hooks the scenario drives."""

    server: ChannelServer

    async def handle_in(self, event, payload):
        if event == "typing":
            self.update(self.presence_key, lambda meta: {**meta, "typing": payload["typing"]})
            return ok()
        if event == "list":
            return ok(self.presence_list())
        if event == "kick":  # the server disconnects every socket of this user (PROTOCOL.md §4)
            self.server.disconnect(self.socket.socket_id)
            return None
        if event == "boom":
            raise RuntimeError("crash on purpose")
        return await super().handle_in(event, payload)


SCENARIO = r"""
const clients = [];
const open = (name, token) => {
  const socket = new Socket(env.URL, {
    transport: WebSocket, params: { token },
    reconnectAfterMs: () => 20, rejoinAfterMs: () => 50,
  });
  socket.connect();
  const channel = socket.channel("room:1");
  const presence = new Presence(channel);
  const client = { name, socket, channel, presence, syncs: [] };
  presence.onSync(() => client.syncs.forEach((f) => f()));
  clients.push(client);
  return client;
};
// {key: [meta JSON sorted by phx_ref]}: order of keys and of metas is not part of the contract.
const norm = (entries) => Object.fromEntries(
  entries.sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, p]) => [key, p.metas
    .map((m) => JSON.stringify(Object.fromEntries(Object.entries(m).sort())))
    .sort()]));
const clientList = (c) => norm(c.presence.list((key, p) => [key, p]));
const serverList = (via) => until((ok) => via.channel.push("list", {}).receive("ok", (l) => ok(norm(Object.entries(l)))));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Wait until every live client's Presence equals the server's list and `expect(list)` holds.
const checkpoint = async (label, live, expect) => {
  const deadline = Date.now() + 8000;
  while (true) {
    const server = await serverList(live[0]);
    const lists = live.map(clientList);
    if (expect(server) && lists.every((l) => same(l, server))) {
      // (Compared in full above; a large meta's padding is shortened in what goes back to Python.)
      const shrink = (l) => JSON.parse(JSON.stringify(l).replaceAll("x".repeat(20000), "pad"));
      emit(shrink({ label, server, clients: Object.fromEntries(live.map((c, i) => [c.name, lists[i]])) }));
      return;
    }
    if (Date.now() > deadline) throw new Error(`${label}: server ${JSON.stringify(server)} clients ${JSON.stringify(lists)}`);
    // Wake on the next sync of any client (or re-fetch after a short while: the server may be ahead).
    await new Promise((ok) => {
      const timer = setTimeout(done, 100);
      function done() { clearTimeout(timer); live.forEach((c) => (c.syncs = [])); ok(); }
      live.forEach((c) => c.syncs.push(done));
    });
  }
};
const metas = (list) => Object.values(list).reduce((n, m) => n + m.length, 0);
const joined = (c) => until((ok) => c.channel.join().receive("ok", ok));

const ann1 = open("ann1", env.T1), ann2 = open("ann2", env.T1), bob = open("bob", env.T2), cy = open("cy", env.T3);
for (const c of [ann1, ann2, bob, cy]) await joined(c);
await checkpoint("joined", clients, (l) => same(Object.keys(l), ["1", "2", "3"]) && l["1"].length === 2);

await until((ok) => bob.channel.push("typing", { typing: true }).receive("ok", ok));
await checkpoint("updated", clients, (l) => l["2"][0].includes('"typing":true') && l["2"][0].includes("phx_ref_prev"));

await until((ok) => ann2.channel.leave().receive("ok", ok));
const live = [ann1, bob, cy];
await checkpoint("left", live, (l) => l["1"].length === 1 && metas(l) === 3);

// Forced disconnect of user 3: its socket closes with 1001, reconnects and rejoins with a new phx_ref.
const before = (await serverList(bob))["3"][0];
let closeCode = null;
cy.socket.onClose((e) => { if (closeCode === null) closeCode = e.code; });
cy.channel.push("kick", {});
await checkpoint("reconnected", live, (l) => l["3"] && l["3"].length === 1 && l["3"][0] !== before);
emit({ closeCode });

// A crash: phx_error, the client rejoins on its own, and is listed again under a new phx_ref.
const beforeCrash = (await serverList(ann1))["2"][0];
bob.channel.push("boom", {});
await checkpoint("rejoined", live, (l) => l["2"] && l["2"].length === 1 && l["2"][0] !== beforeCrash && metas(l) === 3);

// A new session of an existing user, and another disconnect by the client itself.
const ann3 = open("ann3", env.T1);
await joined(ann3);
await checkpoint("second session", [...live, ann3], (l) => l["1"].length === 2 && metas(l) === 4);
cy.socket.disconnect();
await checkpoint("disconnected", [ann1, bob, ann3], (l) => !("3" in l) && metas(l) === 3);
for (const c of clients) c.socket.disconnect();
"""


@pytest.mark.parametrize(("batch", "pad"), [("0", ""), ("50ms", ""), ("50ms", PAD)], ids=["unbatched", "batched", "batched-large"])
async def test_phoenix_js_presence_matches_the_server_everywhere(make_server, mint, batch, pad):
    server = make_server(CONFIG % (pad, batch))
    server.router = Router()
    server.router.add("room:{id}", RoomChannel)
    RoomChannel.server = server  # what the kick event disconnects through, as the admin plane does
    async with server:
        out = await run_js(SCENARIO, URL=server.url.removesuffix("/websocket"), T1=mint(1), T2=mint(2), T3=mint(3))
    labels = [line.get("label") for line in out if "label" in line]
    assert labels == ["joined", "updated", "left", "reconnected", "rejoined", "second session", "disconnected"]
    for line in out:
        if "label" in line:
            assert all(client == line["server"] for client in line["clients"].values()), line
    assert {"closeCode": 1001} in out
    assert set(out[-1]["server"]) == {"1", "2"} and len(out[-1]["server"]["1"]) == 2
