"""The dashboard's layout, pinned: the real app fed a seeded minute of the chat sample's admin plane
(scripts/watch_screenshot.py) must draw exactly the committed pictures, at 80x24, 160x45 and the
README's docs/watch.svg. A layout change fails here; if it is meant, the script redraws them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scripts.watch_screenshot import PICTURES, ROOT, render


@pytest.mark.parametrize("path", list(PICTURES), ids=[path.name for path in PICTURES])
async def test_the_committed_picture_is_what_the_app_draws(path: Path, tmp_path: Path):
    svg = await render(PICTURES[path])
    if path.read_text(encoding="utf-8") != svg:
        drawn = tmp_path / path.name
        drawn.write_text(svg, encoding="utf-8")
        pytest.fail(f"{path.relative_to(ROOT)} is stale: the app now draws {drawn}. If the change is meant, "
                    "run `python scripts/watch_screenshot.py` and commit the pictures.")


async def test_the_picture_does_not_depend_on_the_callers_zone_or_colour_settings():
    saved = {name: os.environ.get(name) for name in ("TZ", "NO_COLOR")}
    # Textual honours NO_COLOR: without pinning, every picture would lose its colours.
    os.environ.update(TZ="Asia/Tokyo", NO_COLOR="1")
    try:
        path = next(path for path, size in PICTURES.items() if size == (80, 24))
        assert await render(PICTURES[path]) == path.read_text(encoding="utf-8")
        assert os.environ["TZ"] == "Asia/Tokyo" and os.environ["NO_COLOR"] == "1"  # given back as found
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()
