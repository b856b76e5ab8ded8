"""Shared fixtures: a real S3 API (moto server over HTTP on 127.0.0.1) and tmp URIs,
one local Spark session for every test that runs a job in this process, and the small
sample dataset and briefly trained model the Spark and browser tests share.

``make test`` runs the suite on two pytest-xdist workers (``--dist loadgroup``). Each test
is put in a group that one worker runs whole: the cluster tests share one standalone
cluster, the tests of the trained ``pipeline`` model share that model, and every other
file is its own group (its module fixtures are built once). The two big groups are
handed out first so the many small ones fill in around them.

The moto server is a separate process started once per test session and stopped at the
end. Tests that touch S3 get a fresh bucket each, so they never see each other's objects.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
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


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """A small sample dataset with the real files' quirks (shared, read-only)."""
    from captioning.data.sample.config import SampleConfig
    from captioning.data.sample.generate import generate_sample_dataset

    root = tmp_path_factory.mktemp("sample") / "flickr"
    summary = generate_sample_dataset(str(root), SampleConfig(num_images=80, seed=3, quirks=True, workers=1))
    return str(root), summary


@pytest.fixture(scope="session")
def pipeline(spark, sample_dataset, tmp_path_factory):
    """Prepared captions, a feature store and a briefly trained small model (shared)."""
    from captioning.pipeline import extract_features
    from captioning.pipeline import prepare_captions
    from captioning.pipeline import train_decoder

    root, _ = sample_dataset
    work = tmp_path_factory.mktemp("pipeline")
    paths = {name: str(work / name) for name in ("prepared", "features", "model")}
    assert prepare_captions.main(["--dataset", root, "--output", paths["prepared"], "--min-count", "3"], spark=spark) == 0
    assert extract_features.main(["--input", root, "--output", paths["features"], "--backbone", "resnet50", "--weights", "none", "--batch-size", "16"], spark=spark) == 0
    assert train_decoder.main(["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], *SMALL_MODEL, "--epochs", "2"], spark=spark) == 0
    return {"root": root, **paths}


SMALL_MODEL = ["--units", "32", "--hidden-units", "64", "--embedding-dim", "16", "--batch-size", "32"]


@pytest.fixture(scope="session")
def speaking_model(spark, pipeline, tmp_path_factory) -> str:
    """A model that says words: the shared small model's data, trained longer and faster.

    The shared model is trained for two epochs, after which it often ends a caption at
    once; an empty caption cannot be read aloud, and three beams of nothing cannot be told
    apart. The features are reused, so this is the training alone (seconds).
    """
    from captioning.pipeline import train_decoder

    model = str(tmp_path_factory.mktemp("speaking") / "model")
    args = ["--captions", pipeline["prepared"], "--features", pipeline["features"], "--output", model, *SMALL_MODEL, "--epochs", "12", "--learning-rate", "0.01", "--patience", "100"]
    assert train_decoder.main(args, spark=spark) == 0
    return model


@pytest.fixture(scope="session")
def captioned_bucket(spark, speaking_model, sample_dataset, tmp_path_factory) -> dict:
    """A folder of good, broken and odd images captioned by caption-images with its default
    search (beam 3) in two runs: the second after a new image is added and one is replaced
    by another picture under the same name. ``folder``, ``output``, and ``expected``
    ({relative path: error reason or None} of the image names there now).

    `captioner caption` is compared with it (tests/spark), and the browser browses it.
    """
    import shutil

    from captioning.pipeline import caption_images
    from tests.spark.images_kit import make_image_folder

    _, summary = sample_dataset
    folder = str(tmp_path_factory.mktemp("bucket") / "photos")
    expected = make_image_folder(folder, summary.images_uri, good=9)
    output = str(tmp_path_factory.mktemp("captions") / "out")
    args = ["--input", folder, "--model", speaking_model, "--output", output, "--batch-size", "8", "--images-per-partition", "8", "--gallery-cards", "0"]
    assert caption_images.main(args, spark=spark) == 0
    names = sorted(os.listdir(summary.images_uri))
    shutil.copy(os.path.join(summary.images_uri, names[20]), os.path.join(folder, "new.jpg"))
    shutil.copy(os.path.join(summary.images_uri, names[21]), os.path.join(folder, names[1]))  # changed content, same name
    assert caption_images.main(args, spark=spark) == 0
    return {"folder": folder, "output": output, "expected": {**expected, "new.jpg": None}}


@pytest.fixture(scope="session")
def one_load_per_search():
    """`captioner caption` run in this process (caption.main) builds its model once per
    search setting for the whole session instead of once per call: the same object the
    command builds, kept (building ResNet50 and tracing the search cost seconds each)."""
    from captioning.app import caption

    built = {}
    real = caption.ImageCaptioner

    def shared(config):
        if config not in built:
            built[config] = real(config)
        return built[config]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(caption, "ImageCaptioner", shared)
        yield


HEAVY_GROUPS = ("cluster", "pipeline")  # handed out first: each runs for minutes
GROUPS_FILE = "CAPTIONING_TEST_GROUPS"  # environment variable: where the first worker writes each file's group


def xdist_groups(items: list[pytest.Item]) -> dict[str, str]:
    """Each test file's group: the expensive session fixture its tests share, else itself.

    A file goes whole into one group, so its module fixtures are built once, on one worker.
    """
    files: dict[str, str] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.startswith("tests/cluster/"):
            files[path] = "cluster"
        elif "pipeline" in getattr(item, "fixturenames", ()):
            files[path] = "pipeline"
        else:
            files.setdefault(path, path)
    return files


def pytest_configure(config):
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        os.environ[GROUPS_FILE] = os.path.join(tempfile.mkdtemp(prefix="test-groups-"), "groups.json")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    groups = xdist_groups(items)
    rank = {group: order for order, group in enumerate(HEAVY_GROUPS)}
    items.sort(key=lambda item: rank.get(groups[item.nodeid.split("::")[0]], len(rank)))  # stable: file order otherwise
    target = os.environ.get(GROUPS_FILE)
    if target and getattr(config, "workerinput", {}).get("workerid") == "gw0":
        with open(target + ".part", "w") as out:
            json.dump(groups, out)
        os.replace(target + ".part", target)


def pytest_xdist_make_scheduler(config, log):
    """Whole groups to one worker at a time: fixtures' fixture closures are known only after
    collection, so the first worker writes each file's group and the scheduler reads it."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                with open(os.environ[GROUPS_FILE]) as source:
                    self.groups = json.load(source)
            path = nodeid.split("::")[0]
            return self.groups.get(path, path)

    return ByGroup(config, log)
