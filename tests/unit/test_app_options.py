"""Options of `captioner caption` and `captioner serve`, and how caption expands folders (no model needed)."""
from __future__ import annotations

import socket

import pytest

from captioning.app import caption, serve
from captioning.app.caption import NO_IMAGES, Answer, expand, search_with_beams
from captioning.errors import InputError
from captioning.model.search.config import SearchConfig


def caption_config(*args: str):
    return caption.config_from_args(caption.build_parser().parse_args(["x.jpg", "--model", "m", *args]))


def test_beams_widen_the_search_and_keep_the_defaults_otherwise():
    assert caption_config().captioner.search == SearchConfig()  # the defaults of caption-images
    assert caption_config("--beams", "2").captioner.search == SearchConfig(beam_width=3, results=2)
    assert caption_config("--beams", "5", "--beam-width", "2").captioner.search == SearchConfig(beam_width=5, results=5)
    assert caption_config("--search", "greedy").captioner.search.method == "greedy"
    with pytest.raises(InputError, match="greedy search finds one caption"):
        caption_config("--search", "greedy", "--beams", "2")
    assert search_with_beams(SearchConfig(beam_width=4), 1) == SearchConfig(beam_width=4)


def test_caption_takes_the_decode_and_model_options():
    config = caption_config("--max-pixels", "1000", "--backbone-weights", "w.h5", "--json")
    assert (config.captioner.decode.max_pixels, config.captioner.backbone_weights, config.as_json) == (1000, "w.h5", True)


def test_serve_needs_a_model_or_an_output_and_shows_every_beam():
    parse = lambda *args: serve.config_from_args(serve.build_parser().parse_args(list(args)))  # noqa: E731
    with pytest.raises(InputError, match="give --model"):
        parse()
    both = parse("--model", "m", "--results", "out", "--beam-width", "4", "--port", "9000")
    assert both.captioner.search == SearchConfig(beam_width=4, results=4)
    assert (both.browse.output_uri, both.port, both.url) == ("out", 9000, "http://127.0.0.1:9000")
    assert parse("--model", "m", "--search", "greedy").captioner.search.results == 1
    assert parse("--results", "out").captioner is None
    assert serve.config_from_argv(("--results", "out", "--verbose")) == parse("--results", "out")


def test_a_port_in_use_is_refused_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match=r"127\.0\.0\.1:\d+ is in use.*--port"):
            serve.check_port(taken.getsockname()[1])


def test_folders_stand_for_their_image_files(tmp_path):
    photos = tmp_path / "photos"
    (photos / "deep").mkdir(parents=True)
    for name in ("b.JPG", "a.png", "deep/c.jpeg", "notes.txt", "deep/.hidden.jpg"):
        (photos / name).write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images")
    items = list(expand([str(photos), str(tmp_path / "file.txt"), str(empty)]))
    assert items[:4] == [str(photos / "a.png"), str(photos / "b.JPG"), str(photos / "deep" / "c.jpeg"), str(tmp_path / "file.txt")]
    assert isinstance(items[4], Answer) and items[4].error == NO_IMAGES and str(empty) in items[4].detail
    assert len(items) == 5


def test_answers_as_json():
    from captioning.model.captioner import Caption

    ok = Answer("a.jpg", captions=(Caption("a dog", ("a", "dog"), -0.5, -1.0, True),))
    assert ok.as_dict() == {"image": "a.jpg", "status": "ok", "captions": [{"caption": "a dog", "score": -0.5, "log_prob": -1.0, "ended": True}]}
    assert caption.text_lines(ok) == ["a.jpg\t-0.500\ta dog"]
    bad = Answer("b.jpg", error="truncated", detail="b.jpg: truncated: cut")
    assert bad.as_dict() == {"image": "b.jpg", "status": "error", "error": "truncated", "error_detail": "b.jpg: truncated: cut"}
