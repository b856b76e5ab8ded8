"""HTML of the web page's cards: a captioned photo with its alternatives, a grid of browsed answers, the errors table.

Plain strings, so they are tested without a server. Every caption, file name, URI and
error detail comes from a model, a person's upload or a bucket, so each is escaped here;
the page adds the snippets with ``st.html``, which also sanitises them. Thumbnails are
``data:`` URIs, so a card needs no further request.
"""
from __future__ import annotations

import base64
import html
import re
from typing import Any, Mapping, Sequence

from captioning.store import storage

STYLE = """<style>
.cap-photo { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
.cap-photo img { max-width: 360px; max-height: 300px; border-radius: 8px; border: 1px solid #dde2ea; }
.cap-photo .text { flex: 1 1 260px; min-width: 0; }
.cap-name { color: #5d6778; font-size: .85rem; overflow-wrap: anywhere; margin: 0 0 4px; }
.cap-best { font-size: 1.35rem; font-weight: 600; margin: 0 0 6px; overflow-wrap: anywhere; }
.cap-score { color: #5d6778; font-variant-numeric: tabular-nums; }
table.cap-beams { border-collapse: collapse; font-size: .92rem; margin-top: 6px; }
table.cap-beams th, table.cap-beams td { text-align: left; padding: 3px 14px 3px 0; border-bottom: 1px solid #eef0f4; }
table.cap-beams td.score { font-variant-numeric: tabular-nums; color: #5d6778; }
ul.cap-grid { list-style: none; margin: 0; padding: 0; display: grid; gap: 14px;
  grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); }
li.cap-card { border: 1px solid #dde2ea; border-radius: 10px; overflow: hidden; background: #fff; }
.cap-thumb { aspect-ratio: 4 / 3; background: #e9edf3; display: flex; align-items: center; justify-content: center; }
.cap-thumb img { width: 100%; height: 100%; object-fit: contain; }
.cap-card .body { padding: 8px 10px 10px; }
.cap-card .caption { margin: 0 0 4px; overflow-wrap: anywhere; }
.cap-card .meta { margin: 0; color: #5d6778; font-size: .8rem; overflow-wrap: anywhere; }
table.cap-problems { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.cap-problems th, table.cap-problems td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #eef0f4; vertical-align: top; }
table.cap-problems td { overflow-wrap: anywhere; }
</style>"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def literal(text: str) -> str:
    """``text`` for Streamlit's markdown (messages, captions of widgets) shown as written:
    file names and details may hold ``*``, ``_``, ``[..](..)`` or ``$``, which must not format."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def photo_card(name: str, preview: bytes | None, captions: Sequence[tuple[str, str]]) -> str:
    """An uploaded photo with its best caption and every alternative: ``captions`` are
    (caption, score text) pairs, best first; the score text is what ``captioner caption`` prints."""
    image = f'<img src="{data_uri(preview)}" alt="{esc(name)}">' if preview else ""
    best, best_score = captions[0]
    rows = "".join(
        f'<tr class="beam"><td class="rank">{rank}</td><td class="text{"" if text else " empty"}">{esc(text) or "<em>(empty)</em>"}</td><td class="score">{esc(score)}</td></tr>'
        for rank, (text, score) in enumerate(captions, start=1)
    )
    beams = (
        f'<table class="cap-beams"><thead><tr><th>#</th><th>caption</th><th>score</th></tr></thead><tbody>{rows}</tbody></table>'
        if len(captions) > 1
        else ""
    )
    return (
        f'<div class="cap-photo">{image}<div class="text">'
        f'<p class="cap-name">{esc(name)}</p>'
        f'<p class="cap-best{"" if best else " empty"}">{esc(best) or "<em>(empty caption: the model ended at once)</em>"}</p>'
        f'<p class="cap-score">score <span class="value">{esc(best_score)}</span></p>'
        f"{beams}</div></div>"
    )


def answer_cards(rows: Sequence[Mapping[str, Any]], thumbnails: Mapping[str, bytes | None]) -> str:
    """A grid of captioned objects: thumbnail, caption, score, object name and URI."""
    cards = []
    for row in rows:
        uri = row.get("uri") or ""
        small = thumbnails.get(uri)
        thumb = f'<img src="{data_uri(small)}" alt="{esc(row.get("caption"))}">' if small else '<span class="meta">no preview</span>'
        score = row.get("score")
        score_text = f"score {score:.3f} · " if isinstance(score, (int, float)) else ""
        cards.append(
            f'<li class="cap-card"><div class="cap-thumb">{thumb}</div><div class="body">'
            f'<p class="caption">{esc(row.get("caption"))}</p>'
            f'<p class="meta">{esc(score_text)}{esc(storage.basename(uri))}</p>'
            f'<p class="meta uri" title="captioned {esc(row.get("captioned_at"))} by {esc(row.get("model_id"))}">{esc(uri)}</p>'
            "</div></li>"
        )
    return f'<ul class="cap-grid">{"".join(cards)}</ul>'


def problem_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Objects without a caption: URI, status, reason and what to do."""
    body = "".join(
        f'<tr class="problem"><td class="uri">{esc(row.get("uri"))}</td><td>{esc(row.get("status"))}</td>'
        f'<td class="reason">{esc(row.get("error"))}</td><td class="detail">{esc(row.get("error_detail"))}</td></tr>'
        for row in rows
    )
    return f'<table class="cap-problems"><thead><tr><th>object</th><th>status</th><th>reason</th><th>detail</th></tr></thead><tbody>{body}</tbody></table>'
