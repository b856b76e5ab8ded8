import json

import pyarrow.parquet as pq
import pytest

from captioning.data.sample.config import CAPTIONS_PER_IMAGE
from captioning.store import storage
from captioning.data.flickr8k import load_dataset
from captioning.pipeline import prepare_captions
from captioning.data.vocab import Vocabulary


@pytest.fixture(scope="module")
def prepared(spark, sample_dataset, tmp_path_factory):
    root, _ = sample_dataset
    out = str(tmp_path_factory.mktemp("prepared"))
    assert prepare_captions.main(["--dataset", root, "--output", out, "--min-count", "3"], spark=spark) == 0
    return root, out


def test_captions_table_has_one_row_per_kept_caption(prepared):
    root, out = prepared
    table = pq.read_table(f"{out}/captions").to_pandas()
    dataset = load_dataset(root)
    expected = {(r.image_id, r.caption_index) for r in dataset.captions if dataset.split_of(r.image_id)}
    assert set(zip(table.image_id, table.caption_index)) == expected
    assert len(table) == len(expected)
    assert set(table.split) == {"train", "dev", "test"}
    for image_id, split in zip(table.image_id, table.split):
        assert dataset.split_of(image_id) == split


def test_token_ids_are_fixed_length_and_decode_to_cleaned_caption(prepared):
    _, out = prepared
    table = pq.read_table(f"{out}/captions").to_pandas()
    vocab = Vocabulary.from_json(storage.read_text(f"{out}/vocab.json"))
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    max_length = summary["max_length"]
    assert {len(ids) for ids in table.token_ids} == {max_length}
    for raw, ids, length in zip(table.raw, table.token_ids, table.length):
        assert ids[0] == vocab.start_id and ids[length - 1] == vocab.end_id
        assert all(i == vocab.pad_id for i in ids[length:])
        words = [w if w in vocab.counts else "<unk>" for w in vocab.tokenize(raw)][: max_length - 2]
        assert vocab.decode(ids) == words


def test_vocabulary_counts_only_training_captions(prepared):
    root, out = prepared
    vocab = Vocabulary.from_json(storage.read_text(f"{out}/vocab.json"))
    dataset = load_dataset(root)
    counts = {}
    for record in dataset.captions:
        if dataset.split_of(record.image_id) == "train":
            for word in vocab.tokenize(record.text):
                counts[word] = counts.get(word, 0) + 1
    assert dict(vocab.counts) == {w: c for w, c in counts.items() if c >= 3}


def test_summary_counts_every_quirk_and_split(prepared, sample_dataset):
    root, out = prepared
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    dataset = load_dataset(root)
    assert {k: summary["issue_counts"].get(k) for k in dataset.issue_counts()} == dataset.issue_counts()
    for reason in ("caption_for_missing_image", "blank_line", "image_without_captions"):
        assert summary["issue_counts"].get(reason, 0) >= 1, reason
    # the captions of the image that is not in the folder, and the second set under "<id>.jpg.1"
    assert summary["issue_counts"]["caption_for_missing_image"] == 2 * CAPTIONS_PER_IMAGE
    assert len(summary["issues"]) == sum(summary["issue_counts"].values())
    assert sum(s["captions"] for s in summary["splits"].values()) == summary["captions"]["written"]


def test_rerun_with_same_inputs_does_nothing(spark, prepared):
    root, out = prepared
    before = {f.uri: f.version for f in storage.list_files(out)}
    assert prepare_captions.main(["--dataset", root, "--output", out, "--min-count", "3"], spark=spark) == 0
    assert {f.uri: f.version for f in storage.list_files(out)} == before


def test_missing_dataset_is_a_clear_error(spark, tmp_path, capsys):
    assert prepare_captions.main(["--dataset", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")], spark=spark) == 2
    assert "nothing" in capsys.readouterr().err
