"""When a connection's frames are written: the first of a loop tick at once (for the first
AT_ONCE connections of the tick), the rest of the tick's in one write at its end, every
client's frames in order (chanctl.server.wire.Flusher, Connection.deliver)."""

from __future__ import annotations

from chanctl.server.wire import AT_ONCE
from tests.support import RawClient

MEMBERS = AT_ONCE + 4


async def test_a_broadcast_goes_at_once_to_the_first_members_of_a_tick_and_to_the_rest_at_its_end(conformance_server, mint):
    async with conformance_server() as server:
        clients = [await RawClient.connect(server.url, mint(i + 1)) for i in range(MEMBERS)]
        for client in clients:
            await client.call(["1", "1", "room:lobby", "phx_join", {}])
        # One synchronous stretch of this test's task is one loop tick of the server's.
        before = server.stats.messages_out
        server.pubsub.broadcast("room:lobby", "first", {"n": 1})
        written_at_once = server.stats.messages_out - before
        server.pubsub.broadcast("room:lobby", "second", {"n": 2})
        still_at_once = server.stats.messages_out - before
        assert written_at_once == still_at_once == AT_ONCE  # a connection's next frames wait for the tick's end
        for client in clients:  # and then every member has both, in order
            assert (await client.recv())[3:] == ["first", {"n": 1}]
            assert (await client.recv())[3:] == ["second", {"n": 2}]
        assert server.stats.messages_out - before == 2 * MEMBERS
        # A new tick: the first members go at once again.
        before = server.stats.messages_out
        server.pubsub.broadcast("room:lobby", "third", {"n": 3})
        assert server.stats.messages_out - before == AT_ONCE
        for client in clients:
            assert (await client.recv())[3:] == ["third", {"n": 3}]
            await client.close()


async def test_a_senders_own_copy_and_its_reply_go_in_one_write_right_after_its_handling(conformance_server, mint, monkeypatch):
    async with conformance_server() as server:
        sender, other = [await RawClient.connect(server.url, mint(i + 1)) for i in range(2)]
        for client in (sender, other):
            await client.call(["1", "1", "room:lobby", "phx_join", {}])
        writes: dict[int, int] = {1: 0, 2: 0}
        for connection in server.connections:
            sock = connection.transport.ws.transport  # asyncio's transport: every write is a send

            def counted(data, write=sock.write, user=connection.user["id"]):
                writes[user] += 1
                return write(data)

            monkeypatch.setattr(sock, "write", counted)
        await sender.send(["1", "2", "room:lobby", "shout", {"body": "hi"}])
        assert (await other.recv())[2:] == ["room:lobby", "shout", {"body": "hi"}]
        assert (await sender.recv())[2:] == ["room:lobby", "shout", {"body": "hi"}]  # its own copy, then the reply
        assert (await sender.recv()) == ["1", "2", "room:lobby", "phx_reply", {"status": "ok", "response": {}}]
        assert writes == {1: 1, 2: 1}  # not the sender's copy at once and its reply at the tick's end
        for client in (sender, other):
            await client.close()
