"""The fuzz campaign of benchmarks/fuzz.py in small: 5,000 frames from a fixed seed at a real
``chanctl serve`` while a control pair chats and an admin watches, with the campaign's own checks:
the server lives and answers /healthz, no control message is lost or out of order, the admin feed
goes on, no traceback or ERROR line in its log, and after the fuzz sockets close it holds only the
control sockets (connections, channels, topics, tasks, file descriptors) with RSS back near the
baseline."""

from __future__ import annotations

from benchmarks.fuzz import campaign


async def test_five_thousand_fuzzed_frames_hurt_no_one(tmp_path):
    report = await campaign(5_000, seed=15, connections=8, workdir=tmp_path, memory_trim=0.2)
    assert report.failures == [], report
    assert report.frames == 5_000 and report.binary > 0 and report.closes.get("1007", 0) > 0
    assert report.control_sent > 0 and report.control_lost == 0
