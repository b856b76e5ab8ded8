"""The gallery page and its thumbnails, checked on the parsed HTML rather than on substrings.

The page is parsed with the standard library's ``html.parser`` into a small element tree,
so the tests count cards, images and table rows the way a browser would see them and
read text after entity decoding (an escaped ``<script>`` must come back as text, not as
an element).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from PIL import Image

from captioning.report import gallery

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# ----------------------------------------------------------------------- HTML helpers


@dataclass
class Element:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list["Element"]:
        return [
            element
            for element in self.iter()
            if (tag is None or element.tag == tag) and (cls is None or cls in element.classes)
        ]

    def find(self, tag: str | None = None, cls: str | None = None) -> "Element":
        found = self.find_all(tag, cls)
        assert found, f"no <{tag or '*'} class={cls}> in the page"
        return found[0]


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID_TAGS:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        raise AssertionError(f"stray </{tag}>")

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(page: str) -> Element:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert [element.tag for element in builder.stack] == ["#document"], "unclosed elements"
    return builder.root


def kv_table(doc: Element, heading: str) -> dict[str, str]:
    for panel in doc.find_all("section", "panel"):
        if panel.find("h3").text() == heading:
            return {row.find("th").text(): row.find("td").text() for row in panel.find_all("tr")}
    raise AssertionError(f"no panel {heading!r}")


# ------------------------------------------------------------------------- fixtures


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def gradient(size: tuple[int, int]) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size)
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    return image


def row(uri, status="ok", caption=None, score=None, error=None, detail=None):
    return {
        "uri": uri,
        "status": status,
        "caption": caption,
        "score": score,
        "error": error,
        "error_detail": detail,
        "model_id": "decoder-v3",
        "run_id": "run-42",
        "captioned_at": "2024-05-01T12:00:00+00:00",
    }


@pytest.fixture(scope="module")
def jpeg_thumb() -> bytes:
    return gallery.thumbnail(encode(gradient((90, 60)), "JPEG"))


SUMMARY = {
    "run_id": "run-42",
    "model_id": "decoder-v3",
    "images_per_second": 37.25,
    "seconds": 12.5,
    "started_at": "2024-05-01T11:59:47+00:00",
    "counts": {"ok": 3, "error": 2, "skipped": 1},
}


def sample_rows() -> list[dict]:
    return [
        row("s3://bucket/photos/dog.jpg", caption="a dog runs on the grass", score=-0.412),
        row("s3://bucket/photos/cat.png", caption="a cat sleeps on a sofa", score=-0.9),
        row("s3://bucket/photos/deep/boat.jpg", caption="a boat on a lake", score=-1.25),
        row("s3://bucket/photos/broken.jpg", "error", error="decode_failed", detail="cannot identify image file"),
        row("s3://bucket/photos/huge.tif", "error", error="too_large", detail="178956970 pixels > limit"),
        row("s3://bucket/photos/notes.txt", "skipped", error="not_an_image", detail="extension .txt"),
    ]


# ----------------------------------------------------------------------- thumbnails


def _rgba() -> Image.Image:
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 150, 200))
    return image


def _palette_with_transparency() -> bytes:
    image = gradient((120, 240)).convert("P")
    return encode(image, "PNG", transparency=0)


@pytest.mark.parametrize(
    ("name", "data", "source_size"),
    [
        ("jpeg", encode(gradient((1000, 600)), "JPEG", quality=90), (1000, 600)),
        ("png", encode(gradient((640, 480)), "PNG"), (640, 480)),
        ("rgba-png", encode(_rgba(), "PNG"), (300, 200)),
        ("grayscale-jpeg", encode(gradient((500, 800)).convert("L"), "JPEG"), (500, 800)),
        ("grayscale-png", encode(gradient((333, 333)).convert("L"), "PNG"), (333, 333)),
        ("palette-transparent", _palette_with_transparency(), (120, 240)),
        ("cmyk-jpeg", encode(gradient((400, 300)).convert("CMYK"), "JPEG"), (400, 300)),
        ("16-bit-png", encode(Image.new("I;16", (256, 200), 40000), "PNG"), (256, 200)),
    ],
)
def test_thumbnail_is_a_small_rgb_jpeg_with_the_same_shape(name, data, source_size):
    thumb = gallery.thumbnail(data, max_side=96)
    assert thumb is not None, name
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        assert max(image.size) <= 96
        assert max(image.size) >= 90  # shrunk to fit, not to some arbitrary smaller size
        assert image.size[0] / image.size[1] == pytest.approx(source_size[0] / source_size[1], rel=0.05)


def test_thumbnail_default_size_is_160():
    with Image.open(io.BytesIO(gallery.thumbnail(encode(gradient((800, 400)), "JPEG")))) as image:
        assert image.size == (160, 80)


def test_thumbnail_never_enlarges_a_small_image():
    with Image.open(io.BytesIO(gallery.thumbnail(encode(gradient((40, 30)), "PNG")))) as image:
        assert image.size == (40, 30)


def test_thumbnail_flattens_transparency_onto_white():
    with Image.open(io.BytesIO(gallery.thumbnail(encode(_rgba(), "PNG"), max_side=60))) as image:
        left, right = image.getpixel((5, 20)), image.getpixel((image.width - 5, 20))
    assert left[0] > 200 and left[1] < 60 and left[2] < 60  # opaque red stays red
    assert min(right) > 235  # transparent half is white, not black


def test_thumbnail_applies_exif_orientation():
    wide = gradient((300, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    data = encode(wide, "JPEG", exif=exif.tobytes())
    with Image.open(io.BytesIO(gallery.thumbnail(data, max_side=90))) as image:
        assert image.size == (30, 90)


def test_thumbnail_uses_jpeg_draft_decoding(monkeypatch):
    from PIL import JpegImagePlugin

    requested = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        requested.append((mode, size, result))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    thumb = gallery.thumbnail(encode(gradient((1600, 1200)), "JPEG"), max_side=100)
    assert thumb is not None
    (mode, size, result), = requested
    assert size == (100, 100)
    assert result is not None and result[1] != (0, 0, 1600, 1200)  # decoder actually scaled down


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,  # JPEG magic, then garbage
        encode(gradient((200, 200)), "JPEG")[:300],  # truncated
        encode(gradient((200, 200)), "PNG")[:60],  # truncated PNG
        None,
    ],
    ids=["empty", "text", "fake-jpeg-header", "truncated-jpeg", "truncated-png", "none"],
)
def test_thumbnail_of_bad_bytes_is_none(data):
    assert gallery.thumbnail(data) is None


def test_thumbnail_rejects_a_nonsense_size():
    with pytest.raises(ValueError, match="max_side"):
        gallery.thumbnail(encode(gradient((10, 10)), "PNG"), max_side=0)


# -------------------------------------------------------------------------- the page


def test_page_shows_every_caption_error_and_count(jpeg_thumb):
    rows = sample_rows()
    thumbs = {r["uri"]: jpeg_thumb for r in rows[:3]}
    doc = parse(gallery.render_gallery(rows, SUMMARY, thumbs, "Run 42"))

    cards = doc.find_all("li", "card")
    assert [card.find("p", "caption").text() for card in cards] == [r["caption"] for r in rows[:3]]
    assert [card.find(cls="name").text() for card in cards] == ["dog.jpg", "cat.png", "boat.jpg"]
    assert [card.find(cls="uri").text() for card in cards] == [r["uri"] for r in rows[:3]]
    assert [card.find(cls="score").text() for card in cards] == ["score -0.412", "score -0.900", "score -1.250"]

    problems = doc.find_all("tr", "problem")
    cells = [[td.text() for td in tr.find_all("td")] for tr in problems]
    assert [c[1:] for c in cells] == [
        ["error", "decode_failed", "cannot identify image file"],
        ["error", "too_large", "178956970 pixels > limit"],
        ["skipped", "not_an_image", "extension .txt"],
    ]
    assert [c[0] for c in cells] == ["broken.jpg" + rows[3]["uri"], "huge.tif" + rows[4]["uri"], "notes.txt" + rows[5]["uri"]]

    assert kv_table(doc, "Objects") == {"ok": "3", "error": "2", "skipped": "1"}
    assert kv_table(doc, "Run") == {
        "run id": "run-42",
        "model id": "decoder-v3",
        "images per second": "37.25",
        "seconds": "12.50",
        "started at": "2024-05-01T11:59:47+00:00",
    }
    assert doc.find("title").text() == "Run 42"
    assert doc.find("h1").text() == "Run 42"


def test_thumbnails_are_embedded_as_data_uris(jpeg_thumb):
    rows = sample_rows()
    thumbs = {rows[0]["uri"]: jpeg_thumb, rows[2]["uri"]: jpeg_thumb}
    doc = parse(gallery.render_gallery(rows, SUMMARY, thumbs, "t"))
    images = doc.find_all("img")
    assert len(images) == 2
    prefix = "data:image/jpeg;base64,"
    for image in images:
        assert image.attrs["src"].startswith(prefix)
        assert base64.b64decode(image.attrs["src"][len(prefix):]) == jpeg_thumb
    assert [image.attrs["alt"] for image in images] == [rows[0]["caption"], rows[2]["caption"]]
    # the card without a thumbnail gets a placeholder instead of a broken image
    assert len(doc.find_all("div", "thumb-missing")) == 1


def test_page_is_self_contained(jpeg_thumb):
    rows = sample_rows()
    page = gallery.render_gallery(rows, SUMMARY, {r["uri"]: jpeg_thumb for r in rows}, "t")
    doc = parse(page)
    assert not doc.find_all("script")
    assert not doc.find_all("link")
    assert not doc.find_all("iframe")
    for element in doc.iter():
        for name in ("src", "href", "srcset", "action", "poster"):
            value = element.attrs.get(name)
            assert value is None or value.startswith("data:"), (element.tag, name, value)
    style = doc.find("style").text()
    assert "url(" not in style and "@import" not in style
    assert doc.find("meta").attrs.get("charset") == "utf-8"
    assert any(m.attrs.get("name") == "viewport" for m in doc.find_all("meta"))


def test_untrusted_text_is_escaped(jpeg_thumb):
    evil_caption = '<script>alert("caption")</script> & <b>bold</b>'
    evil_uri = 's3://bucket/"><img src=x onerror=alert(1)>.jpg'
    rows = [
        row(evil_uri, caption=evil_caption, score=0.5),
        row("s3://bucket/<i>x</i>.gif", "error", error="<reason>", detail="<script>detail()</script>"),
    ]
    summary = {"run_id": "<script>run()</script>", "counts": {"<em>ok</em>": 1}}
    doc = parse(gallery.render_gallery(rows, summary, {evil_uri: jpeg_thumb}, "<script>title()</script>"))

    assert doc.find_all("script") == []
    assert not doc.find_all("b") and not doc.find_all("em") and not doc.find_all("i")
    (image,) = doc.find_all("img")  # the URI did not inject a second image
    assert image.attrs["src"].startswith("data:image/jpeg;base64,")
    assert "onerror" not in image.attrs
    card = doc.find("li", "card")
    assert card.find(cls="caption").text() == evil_caption
    assert card.find(cls="uri").text() == evil_uri
    assert image.attrs["alt"] == evil_caption
    cells = [td.text() for td in doc.find("tr", "problem").find_all("td")]
    assert cells[2:] == ["<reason>", "<script>detail()</script>"]
    assert kv_table(doc, "Run")["run id"] == "<script>run()</script>"
    assert kv_table(doc, "Objects") == {"<em>ok</em>": "1"}
    assert doc.find("title").text() == "<script>title()</script>"


def test_truncated_page_says_how_many_more_and_where(jpeg_thumb):
    rows = [row(f"s3://b/img{i:03}.jpg", caption=f"caption {i}", score=-1.0) for i in range(7)]
    rows += [row(f"s3://b/bad{i}.jpg", "error", error="decode_failed") for i in range(5)]
    page = gallery.render_gallery(
        rows, {"counts": {"ok": 7, "error": 5}}, {}, "t", max_cards=3, full_output_uri="s3://b/out/results/"
    )
    doc = parse(page)
    assert [c.find(cls="caption").text() for c in doc.find_all("li", "card")] == ["caption 0", "caption 1", "caption 2"]
    assert len(doc.find_all("tr", "problem")) == 3
    note = doc.find("p", "note").text()
    assert "3 of 7 captioned images (4 more not shown)" in note
    assert "3 of 5 error and skipped rows (2 more not shown)" in note
    assert "s3://b/out/results/" in doc.find("p", "note").find("code").text()
    # the section headings still count every row, not only the shown ones
    assert [h.text() for h in doc.find_all("h2")] == ["Captions (7)", "Errors and skipped objects (5)"]


def test_truncation_note_without_an_output_uri_and_only_when_needed():
    rows = [row(f"s3://b/{i}.jpg", caption="c") for i in range(4)]
    doc = parse(gallery.render_gallery(rows, {}, {}, "t", max_cards=2))
    note = doc.find("p", "note")
    assert note.text().startswith("This page is truncated: it lists 2 of 4 captioned images (2 more not shown).") and not note.find_all("code")
    assert not parse(gallery.render_gallery(rows, {}, {}, "t", max_cards=4)).find_all("p", "note")


def test_page_without_thumbnails_still_renders():
    rows = sample_rows()
    doc = parse(gallery.render_gallery(rows, SUMMARY, {}, "no pictures"))
    assert not doc.find_all("img")
    assert len(doc.find_all("li", "card")) == 3
    assert len(doc.find_all("div", "thumb-missing")) == 3


def test_empty_run_renders_both_sections():
    doc = parse(gallery.render_gallery([], {"counts": {}}, {}, "empty"))
    assert not doc.find_all("li", "card")
    assert [p.text() for p in doc.find_all("p", "empty")] == [
        "No captioned images.",
        "None: every object was captioned.",
    ]


def test_summary_values_are_rendered_generically():
    summary = {
        "counts": {"ok": 1234567},
        "finished": True,
        "missing": None,
        "tiny": 0.0004,
        "inputs": ["s3://a/", "s3://b/"],
        "timings": {"decode_seconds": 1.5},
    }
    doc = parse(gallery.render_gallery([], summary, {}, "t"))
    assert kv_table(doc, "Objects") == {"ok": "1,234,567"}
    assert kv_table(doc, "Run") == {"finished": "yes", "missing": "\u2014", "tiny": "0.0004", "inputs": "s3://a/, s3://b/"}
    assert kv_table(doc, "timings") == {"decode seconds": "1.50"}


def test_ok_row_without_caption_or_score():
    doc = parse(gallery.render_gallery([row("/data/a.jpg")], {}, {}, "t"))
    card = doc.find("li", "card")
    assert card.find(cls="caption").text() == "(no caption)"
    assert not card.find_all(cls="score")
    assert card.find(cls="name").text() == "a.jpg"


def test_negative_max_cards_is_refused():
    with pytest.raises(ValueError, match="max_cards"):
        gallery.render_gallery([], {}, {}, "t", max_cards=-1)
