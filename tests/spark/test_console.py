"""What a person sees on the console: the job's own progress and results, not library noise."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

from .conftest import SMALL_MODEL

NOISE = ("FutureWarning", "cpu_feature_guard", "petastorm.etl", "NativeCodeLoader", "Setting default log level")


def captioner(*args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    return subprocess.run([sys.executable, "-m", "captioning.cli", *args], capture_output=True, text=True, timeout=600, env=environment)


def test_training_shows_its_epochs_and_no_library_noise_unless_verbose(pipeline, tmp_path):
    arguments = ["train-decoder", "--captions", pipeline["prepared"], "--features", pipeline["features"], *SMALL_MODEL, "--epochs", "1"]

    quiet = captioner(*arguments, "--output", str(tmp_path / "quiet"))
    verbose = captioner(*arguments, "--output", str(tmp_path / "verbose"), "--verbose")

    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr[-2000:] + verbose.stderr[-2000:]
    assert "epoch 1/1: loss" in quiet.stderr
    assert [word for word in NOISE if word in quiet.stderr] == []
    assert "FutureWarning" in verbose.stderr and "petastorm.etl" in verbose.stderr


def test_a_terminal_sees_sparks_progress_bar(sample_dataset, tmp_path):
    root, _ = sample_dataset
    command = [sys.executable, "-m", "captioning.cli", "prepare-captions", "--dataset", root, "--output", str(tmp_path / "prepared"), "--min-count", "3"]
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert process.wait(timeout=600) == 0, seen.decode(errors="replace")[-2000:]
    assert b"[Stage " in seen
