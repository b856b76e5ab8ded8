"""The web page of ``captioner serve`` in a real browser: a server process and headless Chromium.

The server is the real command (``python -m captioning.cli serve``) in its own process,
with the small model and the caption-images output the Spark tests share
(``speaking_model``, ``captioned_bucket``: tests/conftest.py). Chromium is
Debian's (/usr/bin/chromium), driven by Playwright's Python package through
``executable_path``: Playwright's own browser builds are never downloaded. Each browser
gets a fresh profile folder and flags that keep it from contacting any server but ours.
Every wait has a timeout, so a hung server or browser fails a test instead of stalling
the suite, and the server is stopped even when a test fails.

Screenshots are test artefacts, written to ``test-artifacts/`` at the repository root
(or to ``$CAPTIONING_TEST_ARTIFACTS``).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio",
]
SERVER_START_S = 300  # model load and first caption on a busy 2-core machine
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found; install Debian's browser with `apt-get install chromium`", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (make venv installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``captioner serve ARGS`` on a free port, its output in a log file."""

    def __init__(self, args: list[str], log_path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        command = [sys.executable, "-m", "captioning.cli", "serve", *args, "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)

    def log(self) -> str:
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with status {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the server did not answer within {SERVER_START_S} s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


# Streamlit marks the elements of the previous run stale while a run is under way, and
# shows a running icon; a page has settled when neither is left.
SETTLED_JS = """() => !document.querySelector('[data-stale="true"]')
  && !document.querySelector('[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]')"""


def settle(page) -> None:
    """Wait until the page's current run has finished drawing (call after the change you wait for shows)."""
    page.wait_for_function(SETTLED_JS)


def server_env(**changes: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.update(changes)
    return env


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    """Headless Debian Chromium with a fresh profile, driven by Playwright."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(120_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def artifacts() -> str:
    folder = os.environ.get("CAPTIONING_TEST_ARTIFACTS") or os.path.join(REPO, "test-artifacts")
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def espeak_ng():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")
