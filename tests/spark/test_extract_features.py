import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from captioning.store import storage
from captioning.store.feature_store import decode_vectors, read_manifest
from captioning.pipeline import extract_features

from .images_kit import make_image_folder

ARGS = ["--backbone", "mobilenetv3small", "--weights", "none", "--dtype", "float32", "--batch-size", "8", "--images-per-partition", "8"]


def rows_of(store: str):
    """The manifest and every row of the parts it lists."""
    manifest = read_manifest(store)
    frames = [pq.read_table(os.path.join(store, "parts", p)).to_pandas() for p in manifest.parts]
    return manifest, pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def extracted(spark, sample_dataset, tmp_path_factory):
    root, summary = sample_dataset
    folder = str(tmp_path_factory.mktemp("images") / "in")
    expected = make_image_folder(folder, summary.images_uri, good=10)
    store = str(tmp_path_factory.mktemp("features") / "store")
    assert extract_features.main(["--input", folder, "--output", store, *ARGS], spark=spark) == 0
    return folder, store, expected


def test_one_row_per_image_with_reasons_for_bad_ones(extracted):
    folder, store, expected = extracted
    manifest, rows = rows_of(store)
    assert sorted(rows.image_id) == sorted(expected)
    got = {r.image_id: (r.status, r.error) for r in rows.itertuples()}
    for name, reason in expected.items():
        assert got[name] == (("ok", None) if reason is None else ("error", reason)), name
    errors = rows[rows.status == "error"]
    assert errors.features.isna().all() and errors.error_detail.str.len().min() > 10
    assert manifest.rows == len(expected) and manifest.errors == sum(1 for r in expected.values() if r)
    assert manifest.history[-1]["skipped_non_image"] == 1  # notes.txt


def test_manifest_describes_the_model_and_vectors_match_the_encoder(extracted):
    folder, store, _ = extracted
    manifest, rows = rows_of(store)
    assert manifest.encoder["backbone"] == "mobilenetv3small" and manifest.encoder["weights"] == "random:seed=0"
    assert manifest.dtype == "float32" and manifest.feature_dim == 576
    ok = rows[rows.status == "ok"].sort_values("image_id")
    vectors = decode_vectors(list(ok.features), manifest.dtype, manifest.feature_dim)
    assert vectors.shape == (len(ok), 576) and np.isfinite(vectors).all()

    from captioning.model.encoder_spec import EncoderConfig
    from captioning.model.encoder import build_encoder, make_batch_featurizer
    from captioning.data.images import decode_image

    featurize = make_batch_featurizer(build_encoder(EncoderConfig(backbone="mobilenetv3small", weights="none")))
    first = ok.iloc[0]
    pixels = decode_image(storage.read_bytes(first.uri), (224, 224))
    np.testing.assert_allclose(vectors[0], featurize(pixels[None])[0], rtol=1e-4, atol=1e-12)


def test_rerun_computes_nothing_and_changes_are_recomputed_once(spark, extracted, sample_dataset, tmp_path):
    folder, store, expected = extracted
    before = read_manifest(store)
    assert extract_features.main(["--input", folder, "--output", store, *ARGS], spark=spark) == 0
    assert read_manifest(store).parts == before.parts

    _, summary = sample_dataset
    images = sorted(os.listdir(summary.images_uri))
    changed = next(name for name, reason in expected.items() if reason is None and "/" not in name and name.endswith(".jpg"))
    with open(os.path.join(summary.images_uri, images[-1]), "rb") as src, open(os.path.join(folder, changed), "wb") as dst:
        dst.write(src.read())
    with open(os.path.join(summary.images_uri, images[-2]), "rb") as src, open(os.path.join(folder, "added.jpg"), "wb") as dst:
        dst.write(src.read())
    assert extract_features.main(["--input", folder, "--output", store, *ARGS], spark=spark) == 0
    manifest, rows = rows_of(store)
    last = manifest.history[-1]
    assert (last["new"], last["changed"], last["computed"]) == (1, 1, 2)
    assert sorted(rows.image_id) == sorted([*expected, "added.jpg"])  # each image exactly once
    assert len(manifest.parts) == 1 and sorted(os.listdir(os.path.join(store, "parts"))) == list(manifest.parts)
    row = rows[rows.image_id == changed].iloc[0]
    assert row.version == storage.list_files(os.path.join(folder, changed))[0].version


def test_store_made_by_another_model_is_refused(spark, extracted, capsys):
    folder, store, _ = extracted
    assert extract_features.main(["--input", folder, "--output", store, *ARGS, "--seed", "7"], spark=spark) == 2
    err = capsys.readouterr().err
    assert "another model" in err and "random:seed=7" in err and "--overwrite" in err


def test_images_from_s3_prefix(spark, sample_dataset, s3_bucket, tmp_path):
    _, summary = sample_dataset
    names = sorted(os.listdir(summary.images_uri))[:5]
    for name in names:
        storage.write_bytes(f"{s3_bucket}/photos/{name}", storage.read_bytes(os.path.join(summary.images_uri, name)))
    storage.write_bytes(f"{s3_bucket}/photos/broken.jpg", b"\xff\xd8\xff")
    store = str(tmp_path / "s3store")
    assert extract_features.main(["--input", f"{s3_bucket}/photos", "--output", store, *ARGS], spark=spark) == 0
    manifest, rows = rows_of(store)
    assert sorted(rows.uri) == sorted([f"{s3_bucket}/photos/{n}" for n in names] + [f"{s3_bucket}/photos/broken.jpg"])
    listed = {f.uri: f.version for f in storage.list_files(f"{s3_bucket}/photos")}
    assert all(listed[r.uri] == r.version for r in rows.itertuples())
    assert rows.set_index("image_id").loc["broken.jpg", "status"] == "error"
    assert (rows.status == "ok").sum() == 5


def test_a_killed_run_leaves_no_part_behind_even_when_the_next_run_has_nothing_to_do(spark, sample_dataset, tmp_path):
    _, summary = sample_dataset
    folder, store = str(tmp_path / "in"), str(tmp_path / "store")
    make_image_folder(folder, summary.images_uri, good=6, bad=False, nested=False)
    assert extract_features.main(["--input", folder, "--output", store, *ARGS], spark=spark) == 0
    listed = read_manifest(store).parts
    extra = os.path.join(folder, "more")
    make_image_folder(extra, summary.images_uri, good=40, bad=False, nested=False)
    args = ["--input", folder, "--output", store, *ARGS, "--batch-size", "2", "--images-per-partition", "2", "--lease-seconds", "3"]
    process = subprocess.Popen([sys.executable, "-m", "captioning.pipeline.extract_features", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None and not glob.glob(os.path.join(store, "parts", "*", "_temporary", "**", "*.parquet"), recursive=True):
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert set(os.listdir(os.path.join(store, "parts"))) > set(listed)  # the killed run's part, unlisted
    shutil.rmtree(extra)  # the next run has nothing new to compute
    assert extract_features.main(["--input", folder, "--output", store, *ARGS, "--lease-wait-seconds", "30"], spark=spark) == 0
    assert read_manifest(store).parts == listed
    assert sorted(os.listdir(os.path.join(store, "parts"))) == sorted(listed)
