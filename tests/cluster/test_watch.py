"""``chanctl watch`` on one node of a two-node cluster shows both nodes, and a node that leaves."""

from __future__ import annotations

from chanctl.tokens import TokenSigner
from chanctl.tui import WatchApp
from chanctl.tui.widgets import StatsHeader
from tests.support import SECRET, TIMEOUT
from tests.tui.pilot import SIZE, joined, until


def header_text(app: WatchApp) -> str:
    return app.screen.query_one(StatsHeader).render().plain


async def test_watch_shows_every_node_and_one_that_went_away(start_node):
    admin = TokenSigner(SECRET).mint(1, {"admin": True})
    async with start_node("a") as a:
        app = WatchApp(a.url, admin, timeout=TIMEOUT)
        async with app.run_test(size=SIZE) as pilot:
            async with start_node("b") as b, await joined(b.url, TokenSigner(SECRET).mint(7), "room:42"):
                await until(pilot, lambda: "node a" in header_text(app) and "node b 1 conns" in header_text(app),
                            "both nodes in the header, b with its connection")
                # The totals: watch's own socket on a and user 7's on b.
                await until(pilot, lambda: "cluster 2 nodes 2 conns" in header_text(app), "the cluster's totals")
            await until(pilot, lambda: "node b down" in header_text(app) and "cluster 1 nodes" in header_text(app),
                        "b shown down once it stopped, and out of the totals")
