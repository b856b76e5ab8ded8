"""``make demo``'s driver, end to end on a small sample: every stage, the table, a rerun."""
from __future__ import annotations

import glob
import json
import os

import pytest


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from captioning.pipeline import demo

    workdir = tmp_path_factory.mktemp("demo")
    argv = ["--workdir", str(workdir), "--images", "60", "--unseen", "6", "--epochs", "1"]
    return demo, argv, workdir


def _exports(workdir) -> list[dict]:
    rows = []
    for path in glob.glob(os.path.join(workdir, "captions", "exports", "run_id=*", "*.json")):
        with open(path) as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def test_demo_runs_every_stage_and_ends_with_the_metrics_table(demo_run, spark, capsys):
    demo, argv, workdir = demo_run
    assert demo.main(argv, spark=spark) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    last_table = lines[max(i for i, line in enumerate(lines) if line.startswith("Test split, the trained decoder")) + 1:][:4]
    assert last_table[0].startswith("| decoder input | BLEU-1")
    assert [row.split("|")[1].strip() for row in last_table[2:]] == ["image", "blind"]
    metrics = json.loads(open(os.path.join(workdir, "evaluation", "metrics.json")).read())
    assert metrics["images"] > 0 and 0.0 <= metrics["model"]["bleu_nltk"]["BLEU-4"] <= 1.0
    # the unseen images are captioned by a CNN built like the model's (max pooling)
    features = json.loads(open(os.path.join(workdir, "model", "config.json")).read())["features"]
    assert features["pooling"] == "max"
    rows = _exports(workdir)
    assert len(rows) == 6 and {row["status"] for row in rows} == {"ok"}
    assert os.path.exists(os.path.join(workdir, "captions", "gallery.html"))


def test_a_second_demo_run_reuses_every_output(demo_run, spark, capsys):
    demo, argv, workdir = demo_run
    weights = os.path.join(workdir, "model", "model.weights.h5")
    before = os.stat(weights).st_mtime_ns
    assert demo.main(argv, spark=spark) == 0
    assert os.stat(weights).st_mtime_ns == before
    assert len(_exports(workdir)) == 6  # nothing captioned twice
    assert "Pipeline finished" in capsys.readouterr().out


def test_the_demo_on_s3_runs_the_emr_steps_bucket_to_bucket(tmp_path):
    import subprocess
    import sys

    workdir = tmp_path / "demo-s3"
    done = subprocess.run(
        [sys.executable, "-m", "captioning.pipeline.demo", "--storage", "s3", "--workdir", str(workdir), "--images", "60", "--unseen", "6", "--epochs", "1"],
        capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Every stage ran bucket to bucket with the EMR steps' arguments" in done.stdout
    stage_lines = [line for line in done.stdout.splitlines() if ".py --" in line]
    scripts = [line.split(".py --")[0].split()[-1] for line in stage_lines]
    assert scripts == ["prepare_captions", "extract_features", "train_decoder", "evaluate", "caption_images"]
    assert all("s3://" in line and "/tmp" not in line for line in stage_lines)
    copy = workdir / "captioning-results"
    metrics = json.loads((copy / "runs" / "demo" / "evaluation" / "metrics.json").read_text())
    assert metrics["images"] > 0
    assert (copy / "captions" / "gallery.html").exists()
    rows = _exports(copy)
    assert len(rows) == 6 and {row["uri"].split("/unseen/")[0] for row in rows} == {"s3://captioning-data/photos"}
