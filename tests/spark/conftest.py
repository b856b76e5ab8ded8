"""One local Spark session shared by every Spark test (starting a JVM costs seconds)."""
from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from captioning.spark_session import build_session

    session = build_session("captioning-tests", master="local[2]", extra_conf={"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
    yield session
    session.stop()
