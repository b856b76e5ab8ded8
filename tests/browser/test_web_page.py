"""`captioner serve` in headless Chromium: photos captioned as `captioner caption` does, read aloud, bad
uploads answered on the page, and a caption-images output browsed and searched."""
from __future__ import annotations

import base64
import contextlib
import io
import os
import re

import pytest
from PIL import Image

from captioning.app import caption
from captioning.app.browse import AnswerIndex, BrowseConfig
from captioning.store.bulk_output import BulkOutput, latest_answers
from tests.spark.images_kit import huge_png_header

from .conftest import Server, server_env, settle

UPLOAD = '[data-testid="stFileUploaderDropzoneInput"]'
ALERT = '[data-testid="stAlert"]'
PAGE_SIZE = 4
# A drag-and-drop of one file onto the upload box, with the events a browser sends.
DROP_JS = """({name, data}) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
  const zone = document.querySelector('[data-testid="stFileUploaderDropzone"]');
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
  }
}"""
# Fetch the audio the page received and decode it as the browser plays it.
AUDIO_JS = """async (src) => {
  const data = await (await fetch(src)).arrayBuffer();
  const audio = await new OfflineAudioContext(1, 1, 22050).decodeAudioData(data);
  const samples = audio.getChannelData(0);
  let peak = 0, nonzero = 0;
  for (const s of samples) { peak = Math.max(peak, Math.abs(s)); if (s !== 0) nonzero++; }
  return {duration: audio.duration, peak: peak, nonzero: nonzero};
}"""


@pytest.fixture(scope="module")
def printed(sample_dataset, speaking_model, one_load_per_search) -> dict[str, list[tuple[str, str]]]:
    """What `captioner caption --beams 3` prints for a dozen sample images (the page shows the
    three beams of the same search): {file name: [(caption, score text), ...]}, best first."""
    _, summary = sample_dataset
    paths = [os.path.join(summary.images_uri, name) for name in sorted(os.listdir(summary.images_uri))[:12]]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert caption.main([*paths, "--model", speaking_model, "--beams", "3"]) == 0
    captions: dict[str, list[tuple[str, str]]] = {}
    for line in out.getvalue().splitlines():
        image, score, text = line.split("\t")
        captions.setdefault(image, []).append((text, score))
    return captions


@pytest.fixture(scope="module")
def photos(printed) -> list[str]:
    """Two images whose best caption has words (a small model may end a caption at once)."""
    worded = [path for path, captions in printed.items() if captions[0][0]]
    assert len(worded) >= 2, f"the test model gave words to fewer than two of {len(printed)} images: {printed}"
    return worded[:2]


@pytest.fixture(scope="module")
def bulk_output(captioned_bucket) -> str:
    """A real caption-images output of two runs: a folder with broken files, then a new and a changed image."""
    return captioned_bucket["output"]


@pytest.fixture(scope="module")
def server(speaking_model, bulk_output, tmp_path_factory):
    running = Server(["--model", speaking_model, "--results", bulk_output, "--page-size", str(PAGE_SIZE)], tmp_path_factory.mktemp("server") / "serve.log", server_env())
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser_context, server):
    tab = browser_context.new_page()
    tab.goto(server.url)
    tab.wait_for_selector(UPLOAD, state="attached")
    yield tab
    tab.close()


def shown_captions(page, count: int) -> dict[str, list[tuple[str, str]]]:
    """{file name: [(caption, score text), ...]} of the first ``count`` photo boxes, best first."""
    shown = {}
    for number in range(count):
        box = page.locator(f".st-key-photo-{number}")
        box.locator(".cap-best").wait_for()
        rows = box.locator("tr.beam")
        captions = []
        for row in range(rows.count()):
            text = rows.nth(row).locator("td.text")
            empty = "empty" in (text.get_attribute("class") or "")
            captions.append(("" if empty else text.inner_text(), rows.nth(row).locator("td.score").inner_text()))
        shown[box.locator(".cap-name").inner_text()] = captions
    return shown


def test_photos_get_the_captions_the_command_line_prints(page, photos, printed):
    page.set_input_files(UPLOAD, photos)
    shown = shown_captions(page, 2)
    assert sorted(shown) == sorted(os.path.basename(p) for p in photos)
    assert all(len(captions) == 3 for captions in shown.values())
    assert shown == {os.path.basename(path): printed[path] for path in photos}
    assert page.locator(".st-key-photo-0 .cap-photo img").count() == 1  # the photo is shown beside its caption


def test_read_aloud_plays_speech_and_the_page_is_kept_as_a_screenshot(page, photos, artifacts, espeak_ng):
    page.set_input_files(UPLOAD, photos)
    shown_captions(page, 2)
    box = page.locator(".st-key-photo-0")
    box.get_by_role("button", name="Read aloud").click()
    audio = box.locator("audio")
    audio.wait_for(state="attached")
    heard = page.evaluate(AUDIO_JS, audio.get_attribute("src"))
    assert heard["duration"] > 0.3 and heard["nonzero"] > 1000 and heard["peak"] > 0.05, heard
    shot = os.path.join(artifacts, "web-page-photos.png")
    page.screenshot(path=shot, full_page=True)
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size[0] == 1280
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or range(1_000_001)) > 200  # photos and text, not a blank page


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(page, photos, tmp_path, server):
    good = open(photos[0], "rb").read()
    bad = {
        "notes.txt": (b"a shopping list, not a photo\n", "notes.txt: not_an_image"),
        "cut.jpg": (good[: len(good) // 3], "cut.jpg: truncated"),
        "bomb.png": (huge_png_header(), "bomb.png: too_large"),
        "huge.jpg": (good + b"\0" * (50 * 1024 * 1024), "huge.jpg: 50.0 MB is more than the 20 MB"),
    }
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)
    page.set_input_files(UPLOAD, [str(tmp_path / name) for name in bad] + [photos[1]])
    page.locator(".st-key-photo-4 .cap-best").wait_for()  # the good photo after the four bad ones
    messages = [page.locator(f".st-key-photo-{n} {ALERT}").inner_text() for n in range(4)]
    for message, (_, expected) in zip(messages, bad.values()):
        assert message.startswith(expected), message
        assert "Traceback" not in message and len(message.splitlines()) == 1
    assert server.alive()
    again = page.context.new_page()  # a new visitor is still served
    again.goto(server.url)
    again.set_input_files(UPLOAD, photos[:1])
    again.locator(".st-key-photo-0 .cap-best").wait_for()
    again.close()
    assert server.log().count("loading model") == 1  # once per server process, whatever the visitors do


def test_a_dropped_photo_is_captioned(page, photos, printed):
    """Dropping a file on the upload box, as a person drags one from their desktop."""
    with open(photos[0], "rb") as handle:
        data = base64.b64encode(handle.read()).decode("ascii")
    page.evaluate(DROP_JS, {"name": os.path.basename(photos[0]), "data": data})
    page.locator(".st-key-photo-0 .cap-best").wait_for()
    assert shown_captions(page, 1) == {os.path.basename(photos[0]): printed[photos[0]]}


def test_browse_every_object_of_an_output_with_search_pages_and_errors(browser_context, server, bulk_output, artifacts):
    answers = latest_answers(BulkOutput(bulk_output))
    index = AnswerIndex(BrowseConfig(bulk_output, page_size=PAGE_SIZE))
    assert index.runs == 2
    tab = browser_context.new_page()
    tab.goto(server.url)
    tab.get_by_role("tab", name="Browse captions").click()
    tab.locator("li.cap-card img").first.wait_for()
    settle(tab)
    summary = tab.get_by_text(re.compile(r"objects \(.*\) from 2 runs")).inner_text()
    assert f"{len(answers):,} objects" in summary
    total = lambda: int(tab.get_by_text(re.compile(r"captioned objects?\b")).inner_text().split()[0].replace(",", ""))  # noqa: E731
    assert total() == (answers.status == "ok").sum()
    cards = tab.locator("li.cap-card")
    assert cards.count() == PAGE_SIZE and tab.locator("li.cap-card img").count() == PAGE_SIZE  # thumbnails of the page
    first = cards.nth(0).locator("p.uri").inner_text()
    tab.get_by_role("button", name="Next page").click()
    tab.wait_for_function(f"document.querySelector('li.cap-card p.uri').textContent !== {first!r}")
    settle(tab)
    assert cards.count() == min(PAGE_SIZE, total() - PAGE_SIZE)
    word = max(index.captioned.caption.str.split().explode().dropna(), key=lambda w: (0 < index.search(w).total < total(), len(w)))
    tab.get_by_label("Words in the caption").fill(word)
    tab.get_by_label("Words in the caption").press("Enter")
    tab.wait_for_function(f"document.body.innerText.includes('every word of “{word}”')")
    settle(tab)
    assert total() == index.search(word).total
    shown = [c.inner_text() for c in tab.locator("li.cap-card p.caption").all()]
    assert shown and all(re.search(rf"\b{re.escape(word)}\b", caption) for caption in shown)
    tab.screenshot(path=os.path.join(artifacts, "web-page-browse.png"), full_page=True)
    tab.get_by_text("Errors and skipped").click()
    tab.locator("tr.problem").first.wait_for()
    settle(tab)
    reasons = [r.inner_text() for r in tab.locator("tr.problem td.reason").all()]
    assert len(reasons) == min(PAGE_SIZE, len(index.problems)) and set(reasons) <= {"empty", "truncated", "not_an_image", "too_large", "not_an_image_name"}
    tab.close()
