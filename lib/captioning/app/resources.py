"""What a server process builds once and every page session shares: the model, the browse index.

Streamlit runs the page script again on every interaction, each session in its own
thread; the script's module is executed anew, but this one is imported once per process,
so what it holds lives as long as the server. ``captioner serve`` fills it before it
starts serving (the model is loaded and traced before the first visitor comes), and the
page asks it for the same objects. A lock keeps two first visitors from building the
same thing twice.
"""
from __future__ import annotations

import logging
import threading

from captioning.app.browse import AnswerIndex, BrowseConfig
from captioning.model.image_captioner import ImageCaptioner, ImageCaptionerConfig

LOG = logging.getLogger("serve")
_lock = threading.Lock()
_captioners: dict[ImageCaptionerConfig, ImageCaptioner] = {}
_indexes: dict[BrowseConfig, AnswerIndex] = {}


def image_captioner(config: ImageCaptionerConfig) -> ImageCaptioner:
    """The model for ``config``, loaded and warmed up on first use, then shared."""
    with _lock:
        captioner = _captioners.get(config)
        if captioner is None:
            LOG.info("loading model %s", config.model_uri)
            captioner = ImageCaptioner(config)
            captioner.warm_up()
            _captioners[config] = captioner
        return captioner


def answer_index(config: BrowseConfig, reload: bool = False) -> AnswerIndex:
    """The answers of a caption-images output, read on first use or when ``reload``ed (new runs)."""
    with _lock:
        index = None if reload else _indexes.get(config)
        if index is None:
            index = AnswerIndex(config)
            _indexes[config] = index
        return index
