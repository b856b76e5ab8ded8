"""The page of ``captioner serve`` run in this process by Streamlit's own test runner, with a
stand-in model (no TensorFlow): what a visitor sees when the server has no speech engine, and
that a bad upload is a message beside the good photos. The real model in a real browser is
tests/browser/test_web_page.py."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image

from captioning.app import resources
from captioning.app.serve import PAGE_SCRIPT
from captioning.data.images import decode_image
from captioning.model.captioner import Caption

app_testing = pytest.importorskip("streamlit.testing.v1", reason="the app extra (streamlit) is not installed")


class StandInCaptioner:
    """The parts of ImageCaptioner the page uses; decoding is the real one."""

    def __init__(self, config):
        self.config = config
        self.search = config.search
        self.info = SimpleNamespace(identity="stand-in")
        self.encoder = SimpleNamespace(backbone="resnet50")

    def decode(self, data: bytes):
        return decode_image(data, (32, 32), self.config.decode)

    def caption(self, images):
        return [(Caption("a dog runs on the beach", ("a", "dog", "runs", "on", "the", "beach"), -0.52, -3.1, True),) for _ in images]


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def shown(element) -> str:
    """A message's text as the visitor reads it (the page escapes Markdown in it)."""
    return element.value.replace("\\", "")


@pytest.fixture
def page(monkeypatch, tmp_path):
    """The page of ``captioner serve --model m`` on a server whose PATH has no espeak-ng."""
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    monkeypatch.setattr("sys.argv", ["serve", "--model", "models/stand-in"])
    monkeypatch.setattr(resources, "image_captioner", StandInCaptioner)
    app = app_testing.AppTest.from_file(PAGE_SCRIPT, default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    return app


def test_without_a_speech_engine_the_button_says_so(page):
    assert any("apt-get install espeak-ng" in shown(info) for info in page.info)
    page.file_uploader[0].set_value([("dog.jpg", jpeg(), "image/jpeg"), ("notes.txt", b"a shopping list\n", "text/plain")]).run()
    assert not page.exception, page.exception
    buttons = [button for button in page.button if button.key and button.key.startswith("speak-")]
    assert len(buttons) == 1  # the photo's; the text file has none
    assert buttons[0].label == "Read aloud: no speech engine on the server" and buttons[0].disabled
    errors = [shown(error) for error in page.error]
    assert len(errors) == 1 and errors[0].startswith("notes.txt: not_an_image"), errors
