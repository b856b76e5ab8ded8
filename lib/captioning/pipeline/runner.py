"""What every job does around its own work: session ownership and readable failures.

A job's ``main(argv=None, spark=None)`` uses the caller's session when given one (tests,
the demo running several stages) and otherwise builds and stops its own. Expected
failures (bad input, missing files, refused artifacts) end with one ``error:`` line that
names the object and what to do, and exit status 2; anything else is a real bug and keeps
its traceback.
"""
from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

from captioning.cluster.session import JavaMissingError, build_session
from captioning.store.storage import StorageError


class InputError(ValueError):
    """Input or artifact a user can fix; the message says which object and what to do."""


EXPECTED_ERRORS = (InputError, StorageError, JavaMissingError, ValueError, FileNotFoundError)


@contextmanager
def spark_for(app_name: str, spark=None) -> Iterator[object]:
    if spark is not None:
        yield spark
        return
    session = build_session(app_name)
    try:
        yield session
    finally:
        session.stop()


def run_main(job: Callable[[], int | None]) -> int:
    """Run ``job`` turning expected failures into an ``error:`` line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "h5py", "matplotlib", "PIL", "petastorm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # petastorm 0.13 uses pyarrow's legacy dataset API on purpose (see reader.py)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
    try:
        return int(job() or 0)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
