"""Caption single images in one process, without Spark, exactly as caption-images does.

``captioner caption`` and the web page of ``captioner serve`` caption a few images at a
time. They must give the caption the bulk job gives for the same image and settings, so
this class is assembled from the bulk job's own parts: the CNN the model's features came
from (:func:`captioning.model.captioner.encoder_for`), built by
:func:`captioning.model.encoder.build_encoder` and compiled by
:func:`captioning.model.encoder.make_batch_featurizer`; images decoded by
:func:`captioning.data.images.decode_image` at the backbone's input size; captions
searched by :class:`captioning.model.captioner.Captioner`.

Everything is built once, in the constructor. A web server calls from several threads;
one lock lets one batch at a time use the CPU (the cores are shared by every request
anyway) and keeps TensorFlow from tracing the same function twice at once.
TensorFlow is imported inside the constructor only, so importing this module is free.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from captioning.data.images import DecodeConfig, decode_image
from captioning.model.captioner import Caption, encoder_for
from captioning.model.encoder_spec import EncoderConfig
from captioning.model.model_dir import ModelInfo, read_info
from captioning.model.search.config import SearchConfig


@dataclass(frozen=True)
class ImageCaptionerConfig:
    model_uri: str
    search: SearchConfig = field(default_factory=SearchConfig)
    backbone_weights: str | None = None  # weights file of the CNN when the model's features came from one
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    batch_size: int = EncoderConfig.batch_size  # images per CNN and decoder call


class ImageCaptioner:
    """A model directory ready to caption decoded images: ``decode`` bytes, then ``caption``."""

    def __init__(self, config: ImageCaptionerConfig):
        from captioning.model.captioner import Captioner
        from captioning.model.encoder import build_encoder, configure_tensorflow, make_batch_featurizer

        started = time.perf_counter()
        self.config = config
        self.info: ModelInfo = read_info(config.model_uri)
        self.encoder: EncoderConfig = encoder_for(self.info, config.backbone_weights, config.batch_size)
        configure_tensorflow(mixed_precision=self.encoder.mixed_precision)
        self._featurize = make_batch_featurizer(build_encoder(self.encoder))
        self._captioner = Captioner(self.info, config.search)
        self._lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started  # reading the model and building both networks
        self.warm_up_seconds: float | None = None  # set by warm_up()

    @property
    def search(self) -> SearchConfig:
        """The search settings in use, ``max_length`` resolved to the model's maximum."""
        return self._captioner.search

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) images are decoded to."""
        return tuple(self.encoder.spec.input_size)

    def decode(self, data: bytes) -> np.ndarray:
        """Pixels (H, W, 3) uint8 of an image file's bytes; raises :class:`captioning.data.images.ImageDecodeError`."""
        return decode_image(data, self.input_size, self.config.decode)

    def caption(self, images: Sequence[np.ndarray]) -> list[tuple[Caption, ...]]:
        """The ``search.results`` best captions of each decoded image, best first."""
        ranked: list[tuple[Caption, ...]] = []
        size = self.config.batch_size
        with self._lock:
            for start in range(0, len(images), size):
                vectors = self._featurize(np.stack(images[start : start + size]))  # (n, D) float32
                ranked.extend(self._captioner.caption_ranked(vectors))
        return ranked

    def warm_up(self) -> float:
        """Caption one blank image so that the first real request does not pay for tracing
        the compiled functions; returns the seconds it took."""
        started = time.perf_counter()
        width, height = self.input_size
        self.caption([np.zeros((height, width, 3), np.uint8)])
        self.warm_up_seconds = time.perf_counter() - started
        return self.warm_up_seconds
