"""Captions read aloud by the real espeak-ng engine (Debian's espeak-ng package, installed by .ci/run)."""
from __future__ import annotations

import io
import shutil
import wave

import numpy as np
import pytest

from captioning.app.speech import SpeechConfig, SpeechError, engine_path, synthesize, unavailable_reason

needs_engine = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")


def samples(wav: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
        frames = audio.readframes(audio.getnframes())
        return np.frombuffer(frames, dtype="<i2"), audio.getframerate()


@needs_engine
def test_a_caption_becomes_audible_speech():
    pcm, rate = samples(synthesize("a dog runs on the beach"))
    seconds = len(pcm) / rate
    assert 0.8 < seconds < 5.0
    assert np.abs(pcm).max() > 1000  # far from silence
    assert unavailable_reason() is None and engine_path().endswith("espeak-ng")


@needs_engine
def test_longer_text_takes_longer_and_options_in_the_text_are_only_words():
    short, rate = samples(synthesize("a dog"))
    longer, _ = samples(synthesize("--help -w /tmp/x a brown dog runs across the sandy beach"))
    assert len(longer) > 2 * len(short)
    slow, _ = samples(synthesize("a dog runs on the beach", SpeechConfig(words_per_minute=100)))
    fast, _ = samples(synthesize("a dog runs on the beach", SpeechConfig(words_per_minute=300)))
    assert len(slow) > 1.5 * len(fast)


def test_a_failing_engine_is_a_clear_error():
    # `false` stands in for an engine that is installed but broken: it exits with status 1
    with pytest.raises(SpeechError, match=r"failed \(exit status 1"):
        synthesize("a dog", SpeechConfig(command="false"))


def test_missing_engine_says_what_to_install():
    config = SpeechConfig(command="/nonexistent/espeak-ng")
    assert engine_path(config) is None
    assert "apt-get install espeak-ng" in unavailable_reason(config)
    with pytest.raises(SpeechError, match="apt-get install espeak-ng"):
        synthesize("a dog", config)


def test_nothing_or_too_much_to_say():
    with pytest.raises(SpeechError, match="empty"):
        synthesize("   ")
    with pytest.raises(SpeechError, match="more than the 10"):
        synthesize("a dog runs on the beach", SpeechConfig(max_characters=10))
    with pytest.raises(ValueError, match="words_per_minute"):
        SpeechConfig(words_per_minute=5)
