"""A single HTML page to look at what a bulk captioning run produced.

The bulk job writes one result row per object, which is the right shape for further
processing but a poor one for a person checking whether the captions make sense. This
module turns a run's rows, its summary and a thumbnail per image into one HTML file that
can be opened straight from S3 or a laptop disk, mailed, or archived next to the output:

* it is self-contained: the stylesheet is inline, thumbnails are ``data:`` URIs and no
  script is used, so it renders the same offline, behind a proxy or from a bucket that
  serves no other files;
* captions, URIs and error details come from models and from whoever filled the bucket,
  so every piece of text is HTML-escaped before it reaches the page;
* it stays small enough for a browser: thumbnails are re-encoded small JPEGs and the
  number of cards is capped (``max_cards``), with a note saying how many rows were left
  out and where the full output lives.

``thumbnail`` makes the thumbnails (it never raises for bad image bytes, since a bulk
run meets plenty of them) and ``render_gallery`` builds the page; where it is stored is
the caller's (bulk captioning writes it into its output folder).
"""
from __future__ import annotations

import base64
import html
import io
import re
from typing import Any, Mapping, Sequence

from captioning.store import storage

__all__ = ["thumbnail", "render_gallery"]


# --------------------------------------------------------------------------- thumbnails


def thumbnail(data: bytes, max_side: int = 160) -> bytes | None:
    """A JPEG no larger than ``max_side`` on either side, or None if ``data`` is no image.

    JPEG draft mode lets the decoder downscale by 1/2..1/8 while decoding, which makes
    large photos cheap; the EXIF orientation is applied so portrait photos stand up; any
    mode (palette, alpha, grayscale, 16-bit, CMYK) ends up as RGB, with transparency
    flattened onto white.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (max_side, max_side))
            small = _oriented_rgb(image)
        small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        small.save(out, format="JPEG", quality=82, optimize=True)
        return out.getvalue()
    except Exception:  # noqa: BLE001 - corrupt input may fail in many ways inside Pillow
        return None


def _oriented_rgb(image):
    """The decoded image, turned upright by its EXIF orientation and converted to RGB."""
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(image)
    return _to_rgb(upright)


def _to_rgb(image):
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _stretch_to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _stretch_to_8bit(image):
    """Map a high-bit-depth image's value range onto 0..255 (a plain convert clips it)."""
    as_float = image.convert("F")
    low, high = as_float.getextrema()
    scale = 255.0 / (high - low) if high > low else 0.0
    return as_float.point(lambda value: (value - low) * scale).convert("L")


# --------------------------------------------------------------------------- page


def render_gallery(
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    thumbnails: Mapping[str, bytes],
    title: str,
    *,
    max_cards: int = 500,
    full_output_uri: str | None = None,
) -> str:
    """One self-contained HTML page showing a run's captions, statistics and failures.

    ``rows`` are result rows (``uri``, ``status``, ``caption``, ``score``, ``error``,
    ``error_detail``, ``model_id``, ``run_id``, ``captioned_at``); rows with status
    ``ok`` become cards, every other row is listed with its reason in a separate
    section. ``summary`` is rendered generically: ``summary["counts"]`` and any other
    nested mapping as key/value tables, the top-level scalars as a "Run" table.
    ``thumbnails`` maps a row's URI to image bytes (rows without one get a placeholder).
    At most ``max_cards`` cards and ``max_cards`` failure rows are shown; the page says
    how many more exist and points at ``full_output_uri`` when given.
    """
    if max_cards < 0:
        raise ValueError(f"max_cards must not be negative, got {max_cards}")
    captioned = [row for row in rows if row.get("status") == "ok"]
    problems = [row for row in rows if row.get("status") != "ok"]
    shown_cards = captioned[:max_cards]
    shown_problems = problems[:max_cards]
    parts = [
        _page_head(title),
        _run_header(title, summary),
        "<main>",
        _truncation_note(len(captioned), len(shown_cards), len(problems), len(shown_problems), full_output_uri),
        _cards_section(shown_cards, len(captioned), thumbnails),
        _problems_section(shown_problems, len(problems)),
        "</main>",
        "</body>\n</html>\n",
    ]
    return "\n".join(part for part in parts if part)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page_head(title: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light">\n'
        f"<title>{_esc(title)}</title>\n<style>\n{_stylesheet()}</style>\n</head>\n<body>"
    )


def _stylesheet() -> str:
    return """\
:root { --ink: #1d2430; --muted: #5d6778; --line: #dde2ea; --paper: #ffffff;
  --ground: #f4f6f9; --accent: #2f6fdf; --ok: #1f8a4c; --bad: #c0392b; --skip: #8a6d1f; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--ground); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.run, main { max-width: 1280px; margin: 0 auto; padding: 16px; }
header.run { padding-top: 24px; padding-bottom: 0; }
h1 { font-size: 1.6rem; margin: 0 0 14px; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 28px 0 12px; }
h2 .count { color: var(--muted); font-weight: normal; }
.panels { display: flex; flex-wrap: wrap; gap: 12px; }
.panel { background: var(--paper); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; min-width: 220px; flex: 0 1 auto; }
.panel h3 { margin: 0 0 6px; font-size: .8rem; letter-spacing: .06em; text-transform: uppercase;
  color: var(--muted); }
table.kv { border-collapse: collapse; }
table.kv th { text-align: left; font-weight: normal; color: var(--muted); padding: 2px 16px 2px 0;
  vertical-align: top; white-space: nowrap; }
table.kv td { padding: 2px 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
table.counts td { font-weight: 600; text-align: right; }
.status-ok { color: var(--ok); }
.status-error { color: var(--bad); }
.status-skipped { color: var(--skip); }
.note { background: #fff8e1; border: 1px solid #f0d98a; border-radius: 8px; padding: 10px 14px;
  margin: 8px 0 0; overflow-wrap: anywhere; }
.note code, td code, .uri { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .82em; }
.empty { color: var(--muted); }
ul.grid { list-style: none; margin: 0; padding: 0; display: grid; gap: 14px;
  grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); }
li.card { background: var(--paper); border: 1px solid var(--line); border-radius: 10px;
  overflow: hidden; display: flex; flex-direction: column; box-shadow: 0 1px 2px rgba(20, 30, 50, .06); }
.thumb { position: relative; aspect-ratio: 4 / 3; overflow: hidden; background: #e9edf3;
  display: flex; align-items: center; justify-content: center; }
.thumb img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; display: block; }
.thumb-missing { color: var(--muted); font-size: .85rem; }
.card-body { padding: 10px 12px 12px; display: flex; flex-direction: column; gap: 6px; flex: 1; }
.caption { margin: 0; font-size: 1rem; overflow-wrap: anywhere; }
.caption.none { color: var(--muted); font-style: italic; }
.meta { margin: 0; display: flex; flex-wrap: wrap; gap: 4px 10px; color: var(--muted); font-size: .82rem; }
.score { color: var(--ink); font-variant-numeric: tabular-nums; }
.source { margin: auto 0 0; font-size: .85rem; overflow-wrap: anywhere; }
.source .name { font-weight: 600; display: block; }
.source .uri { color: var(--muted); display: block; }
.table-wrap { overflow-x: auto; background: var(--paper); border: 1px solid var(--line); border-radius: 8px; }
table.problems { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.problems th, table.problems td { text-align: left; padding: 8px 12px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
table.problems th { background: #f8f9fb; color: var(--muted); font-weight: 600; }
table.problems tr:last-child td { border-bottom: none; }
table.problems td.object { min-width: 180px; overflow-wrap: anywhere; }
table.problems td.detail { min-width: 200px; overflow-wrap: anywhere; color: var(--muted); }
.reason { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em; }
@media (max-width: 560px) {
  header.run, main { padding: 10px; }
  h1 { font-size: 1.3rem; }
  .panel { flex: 1 1 100%; min-width: 0; }
  ul.grid { grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
  table.problems thead { display: none; }
  table.problems tr { display: block; padding: 8px 12px; border-bottom: 1px solid var(--line); }
  table.problems tr:last-child { border-bottom: none; }
  table.problems td { display: block; padding: 2px 0; border: none; min-width: 0; }
  table.problems td.object, table.problems td.detail { min-width: 0; }
  table.problems td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); }
}
"""


# ----------------------------------------------------------------- header: run summary


def _run_header(title: str, summary: Mapping[str, Any]) -> str:
    panels = []
    counts = summary.get("counts")
    if isinstance(counts, Mapping):
        panels.append(_kv_panel("Objects", counts, css_class="counts", status_keys=True))
    scalars = {key: value for key, value in summary.items() if not isinstance(value, Mapping)}
    if scalars:
        panels.append(_kv_panel("Run", scalars))
    for key, value in summary.items():
        if key != "counts" and isinstance(value, Mapping):
            panels.append(_kv_panel(_label(key), value))
    body = f'<div class="panels">{"".join(panels)}</div>' if panels else ""
    return f'<header class="run">\n<h1>{_esc(title)}</h1>\n{body}\n</header>'


def _kv_panel(heading: str, values: Mapping[str, Any], *, css_class: str = "", status_keys: bool = False) -> str:
    rows = []
    for key, value in values.items():
        attr = f' class="{_status_class(key)}"' if status_keys else ""
        rows.append(f"<tr><th{attr}>{_esc(_label(key))}</th><td>{_esc(_format_value(value))}</td></tr>")
    classes = f"kv {css_class}".strip()
    return (
        f'<section class="panel"><h3>{_esc(heading)}</h3>'
        f'<table class="{classes}"><tbody>{"".join(rows)}</tbody></table></section>'
    )


def _label(key: Any) -> str:
    return str(key).replace("_", " ")


def _format_value(value: Any) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_format_value(item) for item in value)
    return str(value)


def _status_class(status: Any) -> str:
    """A CSS class for a status name; untrusted characters are dropped, not escaped."""
    return "status-" + re.sub(r"[^a-z0-9_-]", "", str(status).lower())


# ----------------------------------------------------------------------- truncation


def _truncation_note(
    captioned: int, shown_cards: int, problems: int, shown_problems: int, full_output_uri: str | None
) -> str:
    hidden_cards = captioned - shown_cards
    hidden_problems = problems - shown_problems
    if not hidden_cards and not hidden_problems:
        return ""
    parts = []
    if hidden_cards:
        parts.append(
            f"{shown_cards:,} of {captioned:,} captioned images "
            f"({hidden_cards:,} more not shown)"
        )
    if hidden_problems:
        parts.append(
            f"{shown_problems:,} of {problems:,} error and skipped rows "
            f"({hidden_problems:,} more not shown)"
        )
    where = (
        f" The full output is at <code>{_esc(full_output_uri)}</code>."
        if full_output_uri
        else " The job's full output has every row."
    )
    return f'<p class="note" role="note">This page is truncated: it lists {_esc(" and ".join(parts))}.{where}</p>'


# ---------------------------------------------------------------------------- cards


def _cards_section(rows: Sequence[Mapping[str, Any]], total: int, thumbnails: Mapping[str, bytes]) -> str:
    heading = f'<h2>Captions <span class="count">({total:,})</span></h2>'
    if not rows:
        return f'<section id="captions">{heading}<p class="empty">No captioned images.</p></section>'
    cards = "\n".join(_card(row, thumbnails.get(row.get("uri") or "")) for row in rows)
    return f'<section id="captions">\n{heading}\n<ul class="grid">\n{cards}\n</ul>\n</section>'


def _card(row: Mapping[str, Any], image: bytes | None) -> str:
    uri = row.get("uri") or ""
    caption = row.get("caption")
    caption_html = (
        f'<p class="caption">{_esc(caption)}</p>'
        if caption
        else '<p class="caption none">(no caption)</p>'
    )
    return (
        '<li class="card">'
        f"{_thumb(image, caption or storage.basename(uri))}"
        f'<div class="card-body">{caption_html}{_card_meta(row)}{_source(uri, row.get("captioned_at"))}</div>'
        "</li>"
    )


def _thumb(image: bytes | None, alt: str) -> str:
    if not image:
        return '<div class="thumb thumb-missing"><span>no preview</span></div>'
    return f'<div class="thumb"><img src="{_data_uri(image)}" alt="{_esc(alt)}"></div>'


def _data_uri(image: bytes) -> str:
    return f"data:{_image_mime(image)};base64,{base64.b64encode(image).decode('ascii')}"


def _image_mime(image: bytes) -> str:
    if image.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if image.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def _card_meta(row: Mapping[str, Any]) -> str:
    items = []
    score = row.get("score")
    if score is not None:
        items.append(f'<span class="score">score {_esc(_format_score(score))}</span>')
    return f'<p class="meta">{"".join(items)}</p>' if items else ""


def _format_score(score: Any) -> str:
    try:
        return f"{float(score):.3f}"
    except (TypeError, ValueError):
        return str(score)


def _source(uri: str, captioned_at: Any = None) -> str:
    tooltip = f' title="captioned {_esc(captioned_at)}"' if captioned_at else ""
    return (
        f'<p class="source"{tooltip}><span class="name">{_esc(storage.basename(uri) or uri)}</span>'
        f'<span class="uri">{_esc(uri)}</span></p>'
    )


# ------------------------------------------------------------------ errors / skipped


def _problems_section(rows: Sequence[Mapping[str, Any]], total: int) -> str:
    heading = f'<h2>Errors and skipped objects <span class="count">({total:,})</span></h2>'
    if not rows:
        return f'<section id="problems">{heading}<p class="empty">None: every object was captioned.</p></section>'
    body = "\n".join(_problem_row(row) for row in rows)
    return (
        f'<section id="problems">\n{heading}\n<div class="table-wrap"><table class="problems">'
        "<thead><tr><th>Object</th><th>Status</th><th>Reason</th><th>Detail</th></tr></thead>"
        f"<tbody>\n{body}\n</tbody></table></div>\n</section>"
    )


def _problem_row(row: Mapping[str, Any]) -> str:
    uri = row.get("uri") or ""
    status = row.get("status")
    return (
        f'<tr class="problem"><td class="object">{_source(uri)}</td>'
        f'<td class="{_status_class(status)}" data-label="Status">{_esc(status)}</td>'
        f'<td data-label="Reason"><span class="reason">{_esc(row.get("error") or "")}</span></td>'
        f'<td class="detail" data-label="Detail">{_esc(row.get("error_detail") or "")}</td></tr>'
    )
