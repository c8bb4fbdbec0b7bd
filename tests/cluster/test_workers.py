"""``chanctl serve --workers N``: N processes on one port form one cluster through the same Redis."""

from __future__ import annotations

import asyncio
import signal

from chanctl.client import Client
from chanctl.server.admin import ADMIN_TOPIC
from tests.cluster.conftest import APP
from tests.server.test_admin import next_event
from tests.support import TIMEOUT, RawClient


async def test_two_workers_share_the_port_and_act_as_one_server(serve_process, redis_server, tmp_path, mint):
    config = tmp_path / "app.yaml"
    config.write_text(APP)
    served = serve_process(config, "--workers", "2", "--redis", redis_server.url)
    clients = [await RawClient.connect(served.url, mint(n)) for n in range(12)]
    for client in clients:
        assert (await client.call(["1", "1", "plain:1", "phx_join", {}]))[4]["status"] == "ok"
    async with Client(served.url, token=mint(1, admin=True), reconnect=False) as admin:
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        async with asyncio.timeout(3 * TIMEOUT):
            while (stats := await next_event(watch, "stats")).get("cluster", {}).get("nodes") != 2:
                pass
    assert stats["cluster"]["subscriptions"] >= 12  # the 12 members, wherever the kernel put them
    await clients[0].send(["1", "2", "plain:1", "shout", {"n": 1}])
    for client in clients:
        assert (await client.recv_until(lambda f: f[3] == "shout"))[4]["n"] == 1
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.proc.wait, 3 * TIMEOUT) == 0
    assert await asyncio.to_thread(served.log_ended.wait, TIMEOUT)  # the workers' last lines read too
    log = "".join(served.banner)
    assert "2 workers on 127.0.0.1:" in log
    # One full banner (the config's topics, auth and warnings once), one line from the other worker.
    assert log.count("  auth: signed tokens") == 1 and log.count("chanctl worker 2: node ") == 1


async def test_workers_need_a_cluster(tmp_path):
    from tests.cli.run import chanctl

    config = tmp_path / "app.yaml"
    config.write_text(APP)
    result = await chanctl("serve", str(config), "--workers", "2")
    assert result.code == 2 and "--workers needs a cluster" in result.err
