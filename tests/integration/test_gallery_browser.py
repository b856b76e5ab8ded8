"""The gallery page in a real browser: headless Chromium renders it and takes a screenshot.

The unit tests check the HTML text; this one checks that a browser builds the expected
document from it (cards, images from ``data:`` URIs, the failure table) and paints
something other than a blank page. Every run uses a fresh Chromium profile folder and
flags that stop Chromium from contacting any server, and each call is bounded by a
timeout so a hung browser fails the test instead of stalling the suite.
"""
from __future__ import annotations

import io
import os
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image, ImageDraw

from captioning.report import gallery

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not found; install Debian's headless browser with `apt-get install chromium`",
)


def chromium(profile_dir, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--mute-audio",
        f"--user-data-dir={profile_dir}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


class DomSummary(HTMLParser):
    """Counts cards, images and failure rows in the DOM Chromium serialised."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cards = 0
        self.image_sources: list[str] = []
        self.problem_rows = 0
        self.scripts = 0
        self.caption_texts: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if tag == "li" and "card" in classes:
            self.cards += 1
        elif tag == "img":
            self.image_sources.append(attrs.get("src") or "")
        elif tag == "tr" and "problem" in classes:
            self.problem_rows += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "p" and "caption" in classes:
            self._in_caption = True
            self.caption_texts.append("")

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.caption_texts[-1] += data


def make_images() -> dict[str, bytes]:
    """Six small pictures of different shapes, modes and formats."""
    specs = [
        ("sunset.jpg", (640, 420), "JPEG", (250, 140, 60)),
        ("forest.png", (500, 500), "PNG", (40, 120, 60)),
        ("portrait.jpg", (300, 520), "JPEG", (80, 90, 200)),
        ("sea.png", (720, 300), "PNG", (30, 110, 170)),
        ("snow.jpg", (400, 300), "JPEG", (225, 230, 240)),
        ("night.png", (350, 350), "PNG", (25, 25, 60)),
    ]
    images = {}
    for index, (name, size, fmt, colour) in enumerate(specs):
        image = Image.new("RGB", size, colour)
        draw = ImageDraw.Draw(image)
        width, height = size
        draw.ellipse((width * 0.2, height * 0.2, width * 0.6, height * 0.7), fill=(255, 255 - 30 * index, 90))
        draw.rectangle((width * 0.55, height * 0.5, width * 0.95, height * 0.95), fill=(20 * index, 40, 120))
        if fmt == "PNG" and index % 2:
            image = image.convert("RGBA")
        out = io.BytesIO()
        image.save(out, format=fmt)
        images[f"s3://photos/holiday/{name}"] = out.getvalue()
    return images


def result_row(uri, status, caption=None, score=None, error=None, detail=None) -> dict:
    return {
        "uri": uri,
        "status": status,
        "caption": caption,
        "score": score,
        "error": error,
        "error_detail": detail,
        "model_id": "inception-lstm-v2",
        "run_id": "run-2024-05-01",
        "captioned_at": "2024-05-01T12:00:00+00:00",
    }


@pytest.fixture
def gallery_page(tmp_path):
    images = make_images()
    captions = [
        "a sunset over the hills",
        "a green forest with a <script>alert(1)</script> sign",
        "a person standing in front of a wall",
        "a boat on the sea",
        "a snowy field under a grey sky",
        "the moon over a city at night",
    ]
    rows = [
        result_row(uri, "ok", caption=caption, score=-0.35 - 0.2 * index)
        for index, (uri, caption) in enumerate(zip(images, captions))
    ]
    rows += [
        result_row("s3://photos/holiday/broken.jpg", "error", error="decode_failed", detail="cannot identify image file"),
        result_row("s3://photos/holiday/huge.tif", "error", error="too_large", detail="decompression bomb: 400000000 pixels"),
        result_row("s3://photos/holiday/readme.txt", "skipped", error="not_an_image", detail="extension .txt"),
    ]
    thumbnails = {uri: gallery.thumbnail(data) for uri, data in images.items()}
    summary = {
        "run_id": "run-2024-05-01",
        "model_id": "inception-lstm-v2",
        "started_at": "2024-05-01T11:58:00+00:00",
        "seconds": 84.2,
        "images_per_second": 0.07,
        "counts": {"ok": 6, "error": 2, "skipped": 1},
    }
    path = tmp_path / "site" / "gallery.html"
    path.parent.mkdir(parents=True)
    path.write_text(gallery.render_gallery(rows, summary, thumbnails, "Holiday photos: run-2024-05-01"), encoding="utf-8")
    return path, captions


def test_chromium_renders_cards_and_data_images(gallery_page, tmp_path):
    path, captions = gallery_page
    result = chromium(tmp_path / "profile-dom", "--dump-dom", path.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = DomSummary()
    dom.feed(result.stdout)
    assert dom.cards == 6
    assert len(dom.image_sources) == 6
    assert all(src.startswith("data:image/jpeg;base64,") for src in dom.image_sources)
    assert dom.problem_rows == 3
    assert dom.scripts == 0  # the caption's <script> stayed text
    assert dom.caption_texts == captions


def test_chromium_screenshot_is_not_blank(gallery_page, tmp_path):
    path, _ = gallery_page
    shot = tmp_path / "gallery.png"
    result = chromium(
        tmp_path / "profile-shot",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1200,900",
        path.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    # a page with text, panels and thumbnails paints many colours, not a flat background
    assert colours is None or len(colours) > 50
