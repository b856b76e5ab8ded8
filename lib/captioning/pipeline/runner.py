"""What every command does around its own work: options, console, session, readable failures.

A stage's ``main(argv=None, spark=None)`` uses the caller's session when given one (tests,
the demo running several stages) and otherwise builds and stops its own. Expected
failures (:class:`captioning.errors.UserError`: bad input, missing files, refused
artifacts) end with one ``error:`` line that names the object and what to do, and exit
status 2; anything else is a bug and keeps its traceback.

The console shows the command's own progress and results. Known noise of the libraries
underneath (TensorFlow's start-up notices, petastorm's and pyarrow's deprecation
warnings, chatty loggers) is filtered at its source unless ``--verbose`` is given.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from captioning.cluster.session import build_session
from captioning.errors import InputError, UserError

T = TypeVar("T")

_QUIET_LOGGERS = ("py4j", "botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "h5py", "matplotlib", "PIL", "petastorm", "absl")


def configure_console(verbose: bool = False) -> None:
    """Log lines with time and source on stderr; third-party noise off unless ``verbose``.

    Must run before TensorFlow is imported: its C++ notices are filtered by an environment
    variable it reads once. Spark's Python workers and data-parallel workers inherit it.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # errors only: no oneDNN / CPU-instruction notices
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # petastorm 0.13 reads through pyarrow's legacy dataset API on purpose (see petastorm_input.py),
    # and both warn about it on every reader; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(petastorm|pyarrow)(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(petastorm|pyarrow|keras|tensorflow)(\.|$)")


@contextmanager
def spark_for(app_name: str, spark=None) -> Iterator[Any]:
    if spark is not None:
        yield spark
        return
    session = build_session(app_name)
    try:
        yield session
    finally:
        session.stop()


def parse_config(parser: argparse.ArgumentParser, to_config: Callable[[argparse.Namespace], T], argv: list[str] | None) -> T:
    """Parse ``argv`` (plus ``--verbose``) and build the stage's config; a value the config
    refuses is the user's to fix, reported like any other input error."""
    parser.add_argument("--verbose", action="store_true", help="also show the libraries' own notices and warnings")
    args = parser.parse_args(argv)
    configure_console(args.verbose)
    try:
        return to_config(args)
    except UserError:
        raise
    except ValueError as error:
        raise InputError(str(error)) from error


def print_json(result: Any) -> None:
    print(json.dumps(result, indent=1))


def run_stage(argv: list[str] | None, parser: argparse.ArgumentParser, to_config: Callable[[argparse.Namespace], T], body: Callable[[T], Any], report: Callable[[Any], None] = print_json) -> int:
    """A stage's ``main``: parse its options into its config, run its body, report the result."""
    return run_main(lambda: report(body(parse_config(parser, to_config, argv))))


@contextmanager
def stopped_cleanly_by_sigterm() -> Iterator[None]:
    """SIGTERM (a cluster stopping a step, a scheduler cancelling) unwinds the job like an
    exception, so it releases its output's lease and stops Spark; Python's default would end
    the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_main(job: Callable[[], int | None]) -> int:
    """Run ``job`` (its result is the exit status, None is 0); an expected failure is an ``error:`` line and 2."""
    try:
        with stopped_cleanly_by_sigterm():
            return int(job() or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
