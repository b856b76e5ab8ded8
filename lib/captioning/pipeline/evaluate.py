"""Caption a split (the test split by default) and score it with the field's metrics.

    spark-submit jobs/evaluate.py --model s3://my-bucket/models/merge-v1 --features s3://my-bucket/features/resnet50 \
        --captions s3://my-bucket/prepared --output s3://my-bucket/evaluation/merge-v1
    captioner evaluate --model data/model --features data/features --captions data/prepared --output data/evaluation

Scores: BLEU-1..4 by nltk's corpus_bleu (as Flickr8k tutorials report them) and the COCO
caption toolkit (BLEU, METEOR, ROUGE-L, CIDEr; SPICE needs a download and is skipped).
The same decoder is also scored "blind", given one constant image vector (the mean test
vector) for every image: the gap between the two rows is how much the captions depend on
the image. Writes metrics.json, predictions.jsonl and summary.md under ``--output``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from captioning.data.layout import SPLITS
from captioning.errors import InputError
from captioning.model.model_dir import read_info
from captioning.model.search.config import SearchConfig
from captioning.pipeline.options import add_search_options, default, positive_int, search_from_args
from captioning.pipeline.runner import run_stage, spark_for
from captioning.serialization import to_dict
from captioning.store import storage
from captioning.store.feature_store import decode_vectors, require_manifest
from captioning.data.prepared import PreparedCaptions

LOG = logging.getLogger("evaluate")
METRICS, PREDICTIONS, SUMMARY = "metrics.json", "predictions.jsonl", "summary.md"  # under --output


@dataclass(frozen=True)
class EvaluateConfig:
    model_uri: str
    features_uri: str
    captions_uri: str
    output_uri: str
    split: str = "test"
    search: SearchConfig = field(default_factory=SearchConfig)
    batch_size: int = 256  # images decoded at once
    coco: bool = True  # the COCO caption toolkit (needs Java) besides nltk's BLEU
    overwrite: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate", description="Caption the test split and score it (BLEU by nltk; BLEU, METEOR, ROUGE-L, CIDEr by pycocoevalcap), with a blind baseline.")
    parser.add_argument("--model", required=True, help="model directory written by train-decoder")
    parser.add_argument("--features", required=True, help="feature store with the split's images (same backbone as the model)")
    parser.add_argument("--captions", required=True, help="output folder of prepare-captions (reference captions)")
    parser.add_argument("--output", required=True, help="folder for metrics.json, predictions.jsonl and summary.md")
    parser.add_argument("--split", default=default(EvaluateConfig, "split"), choices=SPLITS, help="split to evaluate (default %(default)s)")
    add_search_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=default(EvaluateConfig, "batch_size"), help="images decoded at once (default %(default)s)")
    parser.add_argument("--no-coco", action="store_true", help="skip the COCO toolkit (it needs Java for METEOR and tokenisation)")
    parser.add_argument("--overwrite", action="store_true", help="evaluate again even if --output already holds this evaluation")
    return parser


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    return EvaluateConfig(
        model_uri=args.model, features_uri=args.features, captions_uri=args.captions, output_uri=args.output, split=args.split,
        search=search_from_args(args), batch_size=args.batch_size, coco=not args.no_coco, overwrite=args.overwrite,
    )


def evaluation_key(config: EvaluateConfig, info, manifest) -> dict:
    """What an evaluation's result depends on: same key, same metrics."""
    return {
        "model_id": info.identity, "features": list(manifest.parts), "captions": config.captions_uri, "split": config.split,
        "search": to_dict(config.search), "coco": config.coco,
    }


def extract(spark, config: EvaluateConfig, manifest):
    """(image ids, vectors (N, D), references {id: [raw caption, ...]}, images without vectors)."""
    from pyspark.sql import functions as F

    captions = spark.read.parquet(PreparedCaptions(config.captions_uri).captions).where(F.col("split") == config.split)
    references: dict[str, list[str]] = {}
    for row in captions.select("image_id", "caption_index", "raw").orderBy("image_id", "caption_index").collect():
        references.setdefault(row["image_id"], []).append(row["raw"])
    if not references:
        raise InputError(f"{config.captions_uri}: no {config.split} captions")
    features = spark.read.parquet(*manifest.part_uris(config.features_uri))
    wanted = spark.createDataFrame([(i,) for i in references], "image_id string")
    rows = features.where(F.col("status") == "ok").join(wanted, "image_id", "left_semi").select("image_id", "features").orderBy("image_id").collect()
    ids = [r["image_id"] for r in rows]
    vectors = decode_vectors([r["features"] for r in rows], manifest.dtype, manifest.feature_dim) if rows else np.zeros((0, manifest.feature_dim), np.float32)
    missing = sorted(set(references) - set(ids))
    return ids, vectors, references, missing


def caption_all(captioner, vectors: np.ndarray, batch_size: int, source: str = "features"):
    out = []
    for start in range(0, len(vectors), batch_size):
        out.extend(captioner.caption(vectors[start : start + batch_size], source))
    return out


def score(ids, predictions, references, vocabulary, coco: bool) -> dict:
    from captioning.report.metrics import bleu_scores, coco_scores

    hyps_tokens = {i: list(p.words) for i, p in zip(ids, predictions)}
    refs_tokens = {i: [vocabulary.tokenize(r) for r in references[i]] for i in ids}
    result = {"bleu_nltk": bleu_scores(refs_tokens, hyps_tokens)}
    if coco:
        result["coco"] = coco_scores({i: references[i] for i in ids}, {i: p.text for i, p in zip(ids, predictions)})
    return result


def summary_markdown(metrics: dict) -> str:
    from captioning.report.metrics import metric_columns

    rows = [("image", metric_columns(metrics["model"])), ("blind", metric_columns(metrics["blind"]))]
    keys = list(rows[0][1])
    decoder = metrics.get("decoder", "merge")
    lines = [
        f"# Evaluation of {metrics['model_uri']} on the {metrics['split']} split",
        "",
        f"{metrics['images']} images, {decoder} decoder, {metrics['search']['method']} search; {len(metrics['images_without_features'])} images without features skipped.",
        "'blind' is the same decoder given one constant image input for every image. BLEU (nltk) is nltk's corpus BLEU on the",
        "project's cleaned tokens, as Flickr8k tutorials report it; BLEU (COCO), METEOR, ROUGE-L and CIDEr come from the COCO caption toolkit, as papers report them.",
        "",
        "| decoder input | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, flat in rows:
        lines.append(f"| {name} | " + " | ".join(f"{flat[k]:.4f}" for k in keys) + " |")
    if "repeated_trigram_share" in metrics:
        lines += ["", f"Captions holding a repeated trigram: {metrics['repeated_trigram_share']:.1%}."]
    lines += ["", "Examples:", ""]
    for example in metrics["examples"]:
        lines.append(f"- `{example['image_id']}`: **{example['caption']}** (reference: {example['reference']})")
    return "\n".join(lines) + "\n"


def run(config: EvaluateConfig, spark=None) -> dict:
    from captioning.model.captioner import Captioner
    from captioning.model.encoder import configure_tensorflow
    from captioning.report.metrics import repeated_ngram_share

    started = time.time()
    info = read_info(config.model_uri)
    manifest = require_manifest(config.features_uri)
    info.check_features(config.features_uri, manifest.encoder)
    key = evaluation_key(config, info, manifest)
    metrics_uri = storage.join(config.output_uri, METRICS)
    if not config.overwrite and storage.exists(metrics_uri):
        previous = json.loads(storage.read_text(metrics_uri))
        if previous.get("key") == key:
            LOG.info("%s already holds this evaluation; nothing to do (--overwrite evaluates again)", config.output_uri)
            return previous
    with spark_for("evaluate", spark) as session:
        ids, vectors, references, missing = extract(session, config, manifest)
    if not ids:
        raise InputError(f"{config.features_uri}: none of the {len(references)} {config.split} images has features; run extract-features on the dataset")
    configure_tensorflow(mixed_precision=False)  # GPU memory growth before the first model
    captioner = Captioner(info, config.search)
    search = captioner.search
    decode_started = time.time()
    predictions = caption_all(captioner, vectors, config.batch_size, config.features_uri)
    decode_seconds = time.time() - decode_started
    blind_vector = vectors.mean(axis=0, keepdims=True)  # (1, D): the same input (vector or grid) for every image
    blind = captioner.caption(blind_vector) * len(ids)
    metrics = {
        "key": key,
        "model_uri": config.model_uri,
        "model_id": info.identity,
        "split": config.split,
        "images": len(ids),
        "images_without_features": missing,
        "search": to_dict(search),
        "model": score(ids, predictions, references, info.vocabulary, config.coco),
        "blind": score(ids, blind, references, info.vocabulary, config.coco),
        "decoder": info.decoder_kind,
        "blind_caption": blind[0].text,
        "repeated_trigram_share": repeated_ngram_share([p.words for p in predictions], 3),
        "distinct_captions": len({p.text for p in predictions}),
        "captions_per_second": round(len(ids) / max(decode_seconds, 1e-9), 1),
        "seconds": round(time.time() - started, 1),
        "examples": [{"image_id": i, "caption": p.text, "reference": references[i][0]} for i, p in list(zip(ids, predictions))[:5]],
    }
    storage.write_text(storage.join(config.output_uri, PREDICTIONS), "".join(
        json.dumps({"image_id": i, "caption": p.text, "score": round(p.score, 4), "ended": p.ended, "references": references[i]}) + "\n" for i, p in zip(ids, predictions)
    ))
    storage.write_text(storage.join(config.output_uri, SUMMARY), summary_markdown(metrics))
    storage.write_text(metrics_uri, json.dumps(metrics, indent=1))
    return metrics


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_stage(argv, build_parser(), config_from_args, lambda config: run(config, spark), lambda metrics: print(summary_markdown(metrics)))


if __name__ == "__main__":
    raise SystemExit(main())
