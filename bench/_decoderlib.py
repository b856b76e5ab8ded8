"""Pieces of bench_decoders.py: reading stores and splits with pyarrow, timing captioning,
counting repeated n-grams. Nothing runs at import; TensorFlow is imported inside functions."""
from __future__ import annotations

import os
import statistics
import time
import warnings


def store_vectors(features_uri: str, image_ids=None):
    """(image ids sorted, vectors (n, D) float32) of a feature store's usable rows, via pyarrow."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from captioning.model.training.petastorm_input import parquet_files
    from captioning.store.feature_store import decode_vectors, require_manifest

    manifest = require_manifest(features_uri)
    store = pads.dataset(parquet_files(manifest.part_uris(features_uri)), format="parquet")
    condition = pc.field("status") == "ok"
    if image_ids is not None:
        condition = condition & pc.field("image_id").isin(list(image_ids))
    rows = sorted(store.to_table(columns=["image_id", "features"], filter=condition).to_pylist(), key=lambda r: r["image_id"])
    return [r["image_id"] for r in rows], decode_vectors([r["features"] for r in rows], manifest.dtype, manifest.feature_dim)


def split_references(captions_uri: str, split: str, vocabulary) -> dict[str, list[list[str]]]:
    """image id -> its reference captions as cleaned tokens (what evaluate scores nltk BLEU on)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from captioning.data.prepared import PreparedCaptions
    from captioning.model.training.petastorm_input import parquet_files

    table = pads.dataset(parquet_files(PreparedCaptions(captions_uri).captions), format="parquet")
    rows = table.to_table(columns=["image_id", "caption_index", "raw"], filter=pc.field("split") == split).to_pylist()
    references: dict[str, list[list[str]]] = {}
    for row in sorted(rows, key=lambda r: (r["image_id"], r["caption_index"])):
        references.setdefault(row["image_id"], []).append(vocabulary.tokenize(row["raw"]))
    return references


def human_ceiling(references: dict[str, list[list[str]]]) -> dict[str, float]:
    from captioning.report.metrics import human_agreement

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns about n-gram orders without a match
        return human_agreement(references)


def parquet_bytes(store_uri: str) -> int:
    """Bytes of a feature store's listed Parquet parts on disk (a local store)."""
    from captioning.store.feature_store import require_manifest

    total = 0
    for part in require_manifest(store_uri).part_uris(store_uri):
        for folder, _, files in os.walk(part):
            total += sum(os.path.getsize(os.path.join(folder, f)) for f in files if f.endswith(".parquet"))
    return total


def captioner_for(model_uri: str, search):
    from captioning.model.captioner import Captioner
    from captioning.model.model_dir import read_info

    return Captioner(read_info(model_uri), search)


def captions_per_second(captioner, vectors, batch_size: int = 256, repeats: int = 3) -> dict:
    """Median captions/s over ``repeats`` passes of all vectors, after one untimed tracing call."""
    started = time.perf_counter()
    captioner.caption(vectors[:batch_size])
    trace = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for begin in range(0, len(vectors), batch_size):
            captioner.caption(vectors[begin : begin + batch_size])
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {"images": len(vectors), "seconds": median, "captions_per_second": len(vectors) / median, "trace_seconds": trace}


def caption_words(captioner, vectors, batch_size: int = 256) -> list[tuple[str, ...]]:
    out = []
    for begin in range(0, len(vectors), batch_size):
        out.extend(c.words for c in captioner.caption(vectors[begin : begin + batch_size]))
    return out


def repeats(model_uri: str, vectors, search_blocked, search_free, examples: int = 3) -> dict:
    """Share of captions holding a repeated trigram, blocking off and on, and a few examples of each."""
    from captioning.report.metrics import repeated_ngram_share

    result = {}
    for name, search in (("off", search_free), ("on", search_blocked)):
        words = caption_words(captioner_for(model_uri, search), vectors)
        repeated = [" ".join(w) for w in words if repeated_ngram_share([w], 3)]
        result[name] = {"share": repeated_ngram_share(words, 3), "captions": len(words), "examples": repeated[:examples] or [" ".join(w) for w in words[:examples]]}
    return result
