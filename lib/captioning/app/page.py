"""The Streamlit page of ``captioner serve``: caption uploaded photos, read captions aloud, browse an output.

Streamlit executes this file (as ``__main__``) on every interaction; the arguments the
server was started with are in ``sys.argv``. Importing it does nothing. The heavy objects
(the model, the browse index) come from :mod:`captioning.app.resources`, built once per
server process; per session, each upload's answer is kept in ``st.session_state`` under
the upload's id, so pressing a button does not caption the photos again.

Expected problems (a file that is not an image, truncated, a decompression bomb, too
large; a failed speech synthesis) become a message on the page naming the file and what
to do, and the server goes on serving.
"""
from __future__ import annotations

import logging
import sys
import time

from captioning.app import resources
from captioning.app.browse import AnswerIndex
from captioning.app.caption import format_score
from captioning.app.cards import STYLE, answer_cards, literal, photo_card, problem_table
from captioning.app.serve import ServeConfig, config_from_argv
from captioning.app.speech import SpeechError, synthesize, unavailable_reason
from captioning.data.images import ImageDecodeError, accepted_formats
from captioning.report.gallery import thumbnail

LOG = logging.getLogger("serve")
MB = 1024 * 1024
PREVIEW_SIDE = 480  # pixels of the photo shown next to its caption


def render() -> None:
    import streamlit as st

    config = config_from_argv(tuple(sys.argv[1:]))
    st.set_page_config(page_title="Captioner", layout="wide")
    st.html(STYLE)
    st.title("Captioner")
    parts = [(label, body) for label, body, wanted in (("Caption photos", photos_view, config.captioner), ("Browse captions", browse_view, config.browse)) if wanted]
    if len(parts) == 1:
        parts[0][1](config)
        return
    for tab, (_, body) in zip(st.tabs([label for label, _ in parts]), parts):
        with tab:
            body(config)


# --------------------------------------------------------------------------- photos


def photos_view(config: ServeConfig) -> None:
    import streamlit as st

    captioner = resources.image_captioner(config.captioner)
    search = captioner.search
    beams = f"beam search, {search.beam_width} beams" if search.method == "beam" else "greedy search"
    st.caption(literal(f"Model {config.captioner.model_uri} ({captioner.info.identity}), {captioner.encoder.backbone} features, {beams}."))
    st.markdown("Drop photos on the box below, or browse for them: each gets the model's caption, the other captions its beam search kept with their scores, and a button that reads the caption aloud.")
    silent = unavailable_reason(config.speech)
    if silent:
        st.info(literal(f"Read-aloud is off: {silent}."))
    uploads = st.file_uploader(
        "Photos", accept_multiple_files=True, key="photos",
        help=f"Drop photos here or browse for them; {', '.join(accepted_formats(config.captioner.decode))}, up to {config.max_upload_mb} MB each.",
    )
    answers = st.session_state.setdefault("answers", {})
    for number, upload in enumerate(uploads or []):
        if upload.file_id not in answers:
            answers[upload.file_id] = answer_upload(config, upload.name, upload.size, upload.getvalue)
        with st.container(key=f"photo-{number}", border=True):
            show_answer(config, upload.file_id, answers[upload.file_id], silent)


def answer_upload(config: ServeConfig, name: str, size: int, read) -> dict:
    """What the page shows for one upload: its captions and a preview, or a one-line problem."""
    captioner = resources.image_captioner(config.captioner)
    if size > config.max_upload_mb * MB:
        return {"name": name, "problem": f"{name}: {size / MB:.1f} MB is more than the {config.max_upload_mb} MB a photo may have here; downscale it, or caption it with the captioner caption command"}
    started = time.perf_counter()
    data = read()
    try:
        pixels = captioner.decode(data)
    except ImageDecodeError as error:
        LOG.info("upload %s refused: %s", name, error.reason)
        return {"name": name, "problem": f"{name}: {error}"}
    captions = captioner.caption([pixels])[0]
    LOG.info("upload %s (%d bytes) captioned in %.2f s", name, size, time.perf_counter() - started)
    return {"name": name, "captions": [(c.text, format_score(c.score)) for c in captions], "preview": thumbnail(data, max_side=PREVIEW_SIDE)}


def show_answer(config: ServeConfig, key: str, answer: dict, silent: str | None) -> None:
    import streamlit as st

    if "problem" in answer:
        st.error(literal(answer["problem"]))
        return
    st.html(photo_card(answer["name"], answer["preview"], answer["captions"]))
    text = answer["captions"][0][0]
    label = "Read aloud" if not silent else "Read aloud: no speech engine on the server"
    if st.button(label, key=f"speak-{key}", icon=":material/volume_up:", disabled=bool(silent) or not text, help=silent):
        try:
            answer["speech"] = synthesize(text, config.speech)
        except SpeechError as error:
            st.error(literal(f"{answer['name']}: cannot read the caption aloud: {error}"))
    if answer.get("speech"):
        st.audio(answer["speech"], format="audio/wav", autoplay=True)


# --------------------------------------------------------------------------- browsing


def browse_view(config: ServeConfig) -> None:
    import streamlit as st

    browse = config.browse
    reload = st.button("Reload", key="reload", help="read the output again, with the runs finished since")
    index = resources.answer_index(browse, reload=reload)
    counts = ", ".join(f"{count:,} {status}" for status, count in sorted(index.counts.items()))
    st.caption(literal(
        f"{browse.output_uri}: {index.objects:,} objects ({counts or 'none yet'}) from {index.runs} {'run' if index.runs == 1 else 'runs'}, latest {index.latest_run or '-'}; "
        f"read in {index.load_seconds:.1f} s."
    ))
    view = st.radio("Show", ["Captioned", "Errors and skipped"], horizontal=True, key="view", label_visibility="collapsed")
    if view == "Captioned":
        captioned_view(index)
    else:
        errors_view(index)


def captioned_view(index: AnswerIndex) -> None:
    import streamlit as st

    query = st.text_input("Words in the caption", key="query", placeholder="dog beach")
    selection = index.search(query)
    page = selection.page(pager("captioned", query, selection.pages))
    matching = literal(f" with every word of “{query.strip()}”") if query.strip() else ""
    st.markdown(f"**{page.total:,}** captioned {'object' if page.total == 1 else 'objects'}{matching}; page {page.number} of {page.pages}.")
    if page.rows:
        st.html(answer_cards(page.rows, index.thumbnails(page.rows)))


def errors_view(index: AnswerIndex) -> None:
    import streamlit as st

    everything = "every reason"
    choices = [everything] + [f"{reason} ({count:,})" for reason, count in sorted(index.reasons.items())]
    chosen = st.selectbox("Reason", choices, key="reason")
    reason = None if chosen == everything else chosen.rsplit(" (", 1)[0]
    selection = index.errors(reason)
    page = selection.page(pager("errors", chosen, selection.pages))
    st.markdown(f"**{page.total:,}** {'object' if page.total == 1 else 'objects'} without a caption; page {page.number} of {page.pages}.")
    if page.rows:
        st.html(problem_table(page.rows))


def pager(name: str, selection: str, pages: int) -> int:
    """The page number chosen for this view; back to 1 whenever the filter changes."""
    import streamlit as st

    key, seen = f"page-{name}", f"page-{name}-filter"
    if st.session_state.get(seen) != selection:
        st.session_state[seen] = selection
        st.session_state[key] = 1
    st.session_state[key] = min(max(1, int(st.session_state.get(key, 1))), pages)

    def step(delta: int) -> None:
        st.session_state[key] = min(max(1, st.session_state[key] + delta), pages)

    left, middle, right, _ = st.columns([1, 1, 1, 3], vertical_alignment="center")
    left.button("Previous page", key=f"{key}-previous", on_click=step, args=(-1,), disabled=st.session_state[key] <= 1)
    middle.number_input("Page", min_value=1, max_value=pages, step=1, key=key, label_visibility="collapsed")
    right.button("Next page", key=f"{key}-next", on_click=step, args=(1,), disabled=st.session_state[key] >= pages)
    return int(st.session_state[key])


if __name__ == "__main__":
    render()
