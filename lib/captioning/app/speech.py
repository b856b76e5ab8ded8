"""Captions read aloud, synthesised offline on the server by espeak-ng.

The original page sent captions to an online text-to-speech service; here speech comes
from a local engine, so the page works without internet access and no caption leaves the
machine. espeak-ng (Debian package ``espeak-ng``) is run through its command line: it is
the engine's own maintained interface, and it needs no Python binding to be built.

The text goes to the engine on standard input, never as an argument, so a caption can
not be taken for an option. The engine writes a WAV file (its ``--stdout`` stream leaves
the RIFF sizes unset, which some players refuse), read back here and handed to the page.
When the engine is missing, :func:`unavailable_reason` says what to install and the page
shows that instead of a working button.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from captioning.errors import UserError

INSTALL_HINT = "install espeak-ng on the server (apt-get install espeak-ng)"


class SpeechError(UserError, RuntimeError):
    """The engine could not say a text; the message says why."""


@dataclass(frozen=True)
class SpeechConfig:
    command: str = "espeak-ng"  # program name looked up on PATH, or a path to it
    voice: str = "en-us"  # an espeak-ng voice (espeak-ng --voices lists them)
    words_per_minute: int = 150  # a little slower than the engine's 175: captions are short
    timeout_s: float = 30.0  # the engine says a caption in well under a second
    max_characters: int = 1000  # longer texts are refused rather than read for minutes

    def __post_init__(self) -> None:
        if not 80 <= self.words_per_minute <= 450:
            raise ValueError(f"words_per_minute must be within 80..450 (espeak-ng's range), got {self.words_per_minute}")
        if self.max_characters < 1 or self.timeout_s <= 0:
            raise ValueError("max_characters and timeout_s must be positive")


def engine_path(config: SpeechConfig = SpeechConfig()) -> str | None:
    """The engine's executable, or None when it is not installed."""
    return shutil.which(config.command)


def unavailable_reason(config: SpeechConfig = SpeechConfig()) -> str | None:
    """Why captions cannot be read aloud here, or None when they can."""
    if engine_path(config) is None:
        return f"no speech engine: {config.command} was not found; {INSTALL_HINT}"
    return None


def synthesize(text: str, config: SpeechConfig = SpeechConfig()) -> bytes:
    """WAV bytes (16-bit mono PCM) of ``text`` spoken by the engine."""
    text = " ".join(text.split())
    if not text:
        raise SpeechError("nothing to read aloud: the caption is empty")
    if len(text) > config.max_characters:
        raise SpeechError(f"the text has {len(text)} characters, more than the {config.max_characters} read aloud here")
    program = engine_path(config)
    if program is None:
        raise SpeechError(unavailable_reason(config))
    with tempfile.TemporaryDirectory(prefix="speech-") as folder:
        wav = os.path.join(folder, "speech.wav")
        command = [program, "-v", config.voice, "-s", str(config.words_per_minute), "-b", "1", "-w", wav, "--stdin"]
        try:
            done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=config.timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise SpeechError(f"{program} did not finish within {config.timeout_s:.0f} s") from error
        if done.returncode != 0 or not os.path.exists(wav):
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SpeechError(f"{program} failed (exit status {done.returncode}: {detail[-1] if detail else 'no message'}); try it by hand: echo hello | {config.command} --stdin")
        with open(wav, "rb") as handle:
            return handle.read()
