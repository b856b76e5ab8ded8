"""Shared fixtures: a real S3 API (moto server over HTTP on 127.0.0.1) and tmp URIs, and
one local Spark session for every test that runs a job in this process.

The moto server is a separate process started once per test session and stopped at the
end. Tests that touch S3 get a fresh bucket each, so they never see each other's objects.
"""
from __future__ import annotations

import os
import sys
import uuid

import pytest


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a local S3 server; AWS_* variables point boto3, s3fs and S3A at it for the session."""
    from captioning.store.local_s3 import LocalS3

    with LocalS3() as server:
        yield server.endpoint


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A new empty bucket on the moto server, as ``s3://name``."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def spark(s3_endpoint):
    """local[2] in this process, shared by the Spark and cluster tests (a JVM costs seconds).

    It starts after the S3 test server, so the Python workers Spark launches inherit the
    AWS_* variables that point them at it.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from captioning.cluster.session import build_session

    session = build_session("captioning-tests", master="local[2]", extra_conf={"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
    yield session
    session.stop()
