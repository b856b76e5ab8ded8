"""reader: Parquet training view -> tf.data teacher-forcing batches, on local files.

Each row's feature vector carries its row number in element 0, so the tests can tell
which rows a dataset yielded even though it yields features, not image ids.
"""
from __future__ import annotations

import os
import threading
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("petastorm")

from captioning.model.training.petastorm_input import ReaderConfig, count_rows, open_dataset, parquet_files  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # petastorm uses pyarrow's legacy dataset
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

ROWS, DIM, L = 300, 8, 7


def make_rows(first: int, count: int, dtype: str = "float16", dim: int = DIM, length: int = L):
    """(features [count, dim], token_ids [count, length]); features[:, 0] = row number."""
    rng = np.random.default_rng(first)
    features = rng.normal(size=(count, dim)).astype(dtype)
    features[:, 0] = np.arange(first, first + count)
    tokens = np.zeros((count, length), np.int32)
    for i in range(count):
        words = 1 + (first + i) % (length - 2)  # 1 .. L-2 words: from much padding to none
        tokens[i, 0] = 2
        tokens[i, 1:1 + words] = rng.integers(4, 100, words)
        tokens[i, 1 + words] = 3
    return features, tokens


def write_part(folder, first: int, count: int, dtype: str = "float16", row_group_size: int = 50):
    """A Parquet part folder like Spark's: data file(s) plus side files readers must skip."""
    features, tokens = make_rows(first, count, dtype)
    table = pa.table({
        "image_id": [f"img{first + i}" for i in range(count)],
        "features": pa.array([row.astype(np.dtype(dtype).newbyteorder("<")).tobytes() for row in features], pa.binary()),
        "token_ids": pa.array(list(tokens), pa.list_(pa.int32())),
    })
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"), row_group_size=row_group_size)
    open(os.path.join(folder, "_SUCCESS"), "wb").close()
    open(os.path.join(folder, ".part-00000.parquet.crc"), "wb").close()
    return features.astype(np.float32), tokens


def config(**overrides) -> ReaderConfig:
    values = dict(batch_size=32, feature_dim=DIM, max_length=L, shuffle=False, seed=7,
                  shuffle_buffer=100, num_epochs=1, workers_count=2)
    values.update(overrides)
    return ReaderConfig(**values)


def collect(urls, cfg: ReaderConfig, max_batches: int | None = None):
    """Concatenated (features, inputs, targets, weights) of the dataset, and the row numbers."""
    parts = []
    with open_dataset(urls, cfg) as dataset:
        if max_batches is not None:
            dataset = dataset.take(max_batches)
        for (features, inputs), targets, weights in dataset:
            parts.append((features.numpy(), inputs.numpy(), targets.numpy(), weights.numpy()))
    features, inputs, targets, weights = (np.concatenate(column) for column in zip(*parts))
    return features[:, 0].astype(int), features, inputs, targets, weights


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    """One 300-row float16 part (6 row groups): (folder, features float32, token_ids)."""
    folder = str(tmp_path_factory.mktemp("view") / "part-a")
    features, tokens = write_part(folder, 0, ROWS)
    return folder, features, tokens


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_once_per_epoch(view, shuffle):
    folder, _, _ = view
    ids, *_ = collect(folder, config(shuffle=shuffle))
    assert sorted(ids) == list(range(ROWS))


def test_batches_have_the_documented_types_and_shapes(view):
    folder, _, _ = view
    with open_dataset(folder, config()) as dataset:
        (features, inputs), targets, weights = next(iter(dataset))
    assert (features.dtype, inputs.dtype, targets.dtype, weights.dtype) == (tf.float32, tf.int32, tf.int32, tf.float32)
    assert features.shape == (32, DIM)
    assert inputs.shape == targets.shape == weights.shape == (32, L - 1)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_decoded_values_match_stored(tmp_path, dtype):
    stored_features, stored_tokens = write_part(str(tmp_path / "part"), 0, 120, dtype=dtype, row_group_size=40)
    ids, features, inputs, targets, weights = collect(str(tmp_path / "part"), config(feature_dtype=dtype, shuffle=True))
    assert sorted(ids) == list(range(120))
    np.testing.assert_array_equal(features, stored_features[ids])
    np.testing.assert_array_equal(inputs, stored_tokens[ids, :-1])
    np.testing.assert_array_equal(targets, stored_tokens[ids, 1:])
    np.testing.assert_array_equal(weights, (stored_tokens[ids, 1:] != 0).astype(np.float32))


def test_shift_and_mask_on_short_and_full_captions(view):
    folder, _, tokens = view
    ids, _, inputs, targets, weights = collect(folder, config())
    short = int(np.where(ids == 0)[0][0])  # row 0: one word, then endseq and padding
    word = tokens[0, 1]
    assert inputs[short].tolist() == [2, word, 3, 0, 0, 0]
    assert targets[short].tolist() == [word, 3, 0, 0, 0, 0]
    assert weights[short].tolist() == [1, 1, 0, 0, 0, 0]
    full = int(np.where(ids == L - 3)[0][0])  # L-2 words: endseq is the last token, no padding
    assert inputs[full][0] == 2 and targets[full][-1] == 3
    assert weights[full].tolist() == [1.0] * (L - 1)


def test_seeds_change_order_not_content(view):
    folder, _, _ = view
    first, *_ = collect(folder, config(shuffle=True, seed=1))
    second, *_ = collect(folder, config(shuffle=True, seed=2))
    assert first.tolist() != second.tolist()
    assert sorted(first) == sorted(second) == list(range(ROWS))


def test_same_seed_with_one_reader_thread_gives_the_same_order(view):
    folder, _, _ = view
    first, *_ = collect(folder, config(shuffle=True, seed=3, workers_count=1))
    second, *_ = collect(folder, config(shuffle=True, seed=3, workers_count=1))
    assert first.tolist() == second.tolist()


def test_two_shards_are_disjoint_and_cover_all_rows(view):
    folder, _, _ = view
    shard0, *_ = collect(folder, config(cur_shard=0, shard_count=2, shuffle=True))
    shard1, *_ = collect(folder, config(cur_shard=1, shard_count=2, shuffle=True))
    assert len(shard0) > 0 and len(shard1) > 0
    assert not set(shard0) & set(shard1)
    assert sorted(np.concatenate([shard0, shard1])) == list(range(ROWS))


def test_num_epochs_none_repeats(view):
    folder, _, _ = view
    ids, *_ = collect(folder, config(num_epochs=None, workers_count=1, batch_size=50), max_batches=13)
    assert len(ids) == 650
    assert sorted(ids[:ROWS]) == list(range(ROWS))  # one reader thread: whole epochs in sequence
    assert min(Counter(ids.tolist()).values()) >= 2


def test_several_part_folders_as_a_list(tmp_path):
    write_part(str(tmp_path / "part-a"), 0, 100, row_group_size=30)
    write_part(str(tmp_path / "part-b"), 100, 150, row_group_size=30)
    urls = [str(tmp_path / "part-a"), "file://" + str(tmp_path / "part-b")]
    assert [os.path.basename(os.path.dirname(f)) for f in parquet_files(urls)] == ["part-a", "part-b"]
    assert count_rows(urls) == 250
    ids, *_ = collect(urls, config(shuffle=True))
    assert sorted(ids) == list(range(250))


def test_count_rows_reads_footers(view):
    folder, _, _ = view
    assert count_rows(folder) == ROWS
    assert count_rows(parquet_files(folder)) == ROWS


def test_wrong_feature_dim_fails_with_a_clear_message(view):
    folder, _, _ = view
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature_dim=16"):
        collect(folder, config(feature_dim=16))


def test_missing_folder_names_the_uri(tmp_path):
    from captioning.store.storage import MissingInputError

    with pytest.raises(MissingInputError, match="nowhere"):
        count_rows(str(tmp_path / "nowhere"))


def test_reader_threads_end_with_the_context(view):
    folder, _, _ = view
    before = set(threading.enumerate())
    with open_dataset(folder, config(num_epochs=None)) as dataset:
        next(iter(dataset))
        assert set(threading.enumerate()) - before  # reader threads are running
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    for thread in leftover:  # the ventilator thread notices the stop within its polling interval
        thread.join(timeout=5)
    assert not [t for t in leftover if t.is_alive()]


@pytest.mark.parametrize("bad", [
    dict(batch_size=0), dict(feature_dtype="bfloat16"), dict(max_length=1),
    dict(cur_shard=0), dict(cur_shard=2, shard_count=2), dict(num_epochs=0),
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        config(**bad)


def test_no_row_group_is_lost_at_the_end_of_an_epoch(tmp_path):
    """Regression: petastorm's thread pool could end an epoch before its last row group.

    Without the fix about one read in three of these 9 row groups came back 30 rows short.
    """
    write_part(str(tmp_path / "part-a"), 0, 100, row_group_size=30)
    write_part(str(tmp_path / "part-b"), 100, 150, row_group_size=30)
    urls = [str(tmp_path / "part-a"), str(tmp_path / "part-b")]
    for attempt in range(8):
        ids, *_ = collect(urls, config(shuffle=True, batch_size=250))
        assert sorted(ids) == list(range(250)), f"attempt {attempt}"


def test_trim_padding_cuts_each_batch_after_its_longest_caption(tmp_path):
    """Batches of short captions lose their all-padding columns and nothing else."""
    folder = str(tmp_path / "part")
    stored_features, stored_tokens = write_part(folder, 0, 96, row_group_size=32)
    words = np.repeat([1, 3, 5], 32)  # rows 0-31: one word, 32-63: three, 64-95: five (no padding)
    stored_tokens[:] = 0
    for i, n in enumerate(words):
        stored_tokens[i, 0], stored_tokens[i, 1:1 + n], stored_tokens[i, 1 + n] = 2, 10 + i % 50, 3
    pq.write_table(
        pa.table({
            "image_id": [f"img{i}" for i in range(96)],
            "features": pa.array([row.astype(np.float16).tobytes() for row in stored_features], pa.binary()),
            "token_ids": pa.array(list(stored_tokens), pa.list_(pa.int32())),
        }),
        os.path.join(folder, "part-00000.parquet"), row_group_size=32,
    )
    trimmed = []
    with open_dataset(folder, config(trim_padding=True, workers_count=1)) as dataset:
        for (features, inputs), targets, weights in dataset:
            ids = features.numpy()[:, 0].astype(int)
            trimmed.append((ids, inputs.numpy(), targets.numpy(), weights.numpy()))
    assert sorted(inputs.shape[1] for _, inputs, _, _ in trimmed) == [2, 4, L - 1]  # longest caption + startseq/endseq - 1
    for ids, inputs, targets, weights in trimmed:
        t = inputs.shape[1]
        np.testing.assert_array_equal(inputs, stored_tokens[ids, :t])
        np.testing.assert_array_equal(targets, stored_tokens[ids, 1:t + 1])
        assert (stored_tokens[ids, t + 1:] == 0).all()  # only padding was dropped
        assert weights.sum() == (stored_tokens[ids, 1:] != 0).sum()  # every real target kept


def test_trimmed_batches_give_the_same_loss_and_gradients(view):
    """Dropping all-padding positions changes neither the loss nor any gradient."""
    from captioning.model.decoder import Architecture, DecoderConfig, build_training_model, compile_model
    from captioning.model.training.petastorm_input import trim_padding

    folder, _, _ = view
    with open_dataset(folder, config(batch_size=16)) as dataset:
        batch = next(iter(dataset))
    (vectors, inputs), targets, weights = batch
    short = tf.reduce_sum(weights, axis=1) <= 3  # captions of at most two words: padding to trim
    batch = ((vectors[short], inputs[short]), targets[short], weights[short])
    trimmed = trim_padding(*batch)
    assert trimmed[1].shape[1] < batch[1].shape[1]

    model = build_training_model(DecoderConfig(vocab_size=100, max_length=L, feature_dim=DIM, architecture=Architecture(embedding_dim=8, units=16, hidden_units=20, dropout=0.0)))
    compile_model(model, 1e-3)

    def loss_and_gradients(example):
        (x, ids), y, w = example
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=(x, ids), y=y, y_pred=model((x, ids), training=False), sample_weight=w)
        return float(loss), tape.gradient(loss, model.trainable_variables)

    full_loss, full_gradients = loss_and_gradients(batch)
    trimmed_loss, trimmed_gradients = loss_and_gradients(trimmed)
    assert trimmed_loss == pytest.approx(full_loss, rel=1e-6)
    for full, cut in zip(full_gradients, trimmed_gradients):
        np.testing.assert_allclose(tf.convert_to_tensor(cut).numpy(), tf.convert_to_tensor(full).numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("width", [1, 2])
def test_bucketed_batches_hold_captions_of_about_one_length(view, width):
    """Bucketing by length: every row once, each batch's caption lengths within one bucket, padding trimmed."""
    folder, _, tokens = view
    lengths = (tokens != 0).sum(axis=1)  # tokens incl. startseq/endseq: 3 .. L
    batches = []
    with open_dataset(folder, config(shuffle=True, trim_padding=True, bucket_width=width, batch_size=16)) as dataset:
        for (features, inputs), targets, weights in dataset:
            batches.append((features.numpy()[:, 0].astype(int), inputs.shape[1], weights.numpy()))
    ids = np.concatenate([b[0] for b in batches])
    assert sorted(ids) == list(range(ROWS))
    bounds = config(bucket_width=width).bucket_boundaries()
    for rows, steps, weights in batches:
        assert len(rows) <= 16
        assert len({int(np.searchsorted(bounds, n, side="right")) for n in lengths[rows]}) == 1  # one bucket per batch
        assert steps == lengths[rows].max() - 1  # trimmed to the longest caption of the batch
        np.testing.assert_array_equal(weights.sum(axis=1), lengths[rows] - 1)
    padded = sum(w.size - w.sum() for _, _, w in batches)
    assert padded <= (width - 1) * ROWS  # width 1: no padded position at all


def test_shuffle_buffer_is_capped_in_bytes():
    small = config(feature_dim=7 * 7 * 2048, shuffle_buffer=8192)  # float16 grids of 196 KiB
    assert small.buffered_rows == (512 * 1024 * 1024) // (7 * 7 * 2048 * 2 + L * 4)
    assert config(shuffle_buffer=100).buffered_rows == 100
