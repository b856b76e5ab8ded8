"""reader against a real S3 API (moto server over HTTP): the same view on S3 and on disk
must give the same batches, through petastorm and the legacy-filesystem wrapper."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("petastorm")

from captioning.store import storage  # noqa: E402
from captioning.model.training.petastorm_input import FsspecLegacyFileSystem, ReaderConfig, _close_end_of_epoch_race, count_rows, open_dataset  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # petastorm uses pyarrow's legacy dataset
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

DIM, L = 8, 7


def view_table(first: int, count: int) -> pa.Table:
    """Training-view rows; features[0] = row number, float16 little-endian bytes."""
    rng = np.random.default_rng(first)
    features = rng.normal(size=(count, DIM)).astype(np.float16)
    features[:, 0] = np.arange(first, first + count)
    tokens = np.zeros((count, L), np.int32)
    for i in range(count):
        words = 1 + i % (L - 2)
        tokens[i, : words + 2] = [2, *rng.integers(4, 100, words), 3]
    return pa.table({
        "image_id": [f"img{first + i}" for i in range(count)],
        "features": pa.array([row.astype("<f2").tobytes() for row in features], pa.binary()),
        "token_ids": pa.array(list(tokens), pa.list_(pa.int32())),
    })


def write_view(root: str) -> list[str]:
    """Two part folders (150 + 100 rows, row groups of 40) with Spark's _SUCCESS markers."""
    parts = []
    for name, first, count in (("part-a", 0, 150), ("part-b", 150, 100)):
        folder = storage.join(root, name)
        storage.makedirs(folder)
        fs, path = storage.arrow_filesystem(storage.join(folder, "part-00000.parquet"))
        pq.write_table(view_table(first, count), path, filesystem=fs, row_group_size=40)
        storage.write_bytes(storage.join(folder, "_SUCCESS"), b"")
        parts.append(folder)
    return parts


def read_sorted(urls, **overrides):
    """All batches concatenated and sorted by row number: features, inputs, targets, weights."""
    cfg = ReaderConfig(**{**dict(batch_size=64, feature_dim=DIM, max_length=L, shuffle=True, seed=5,
                                 shuffle_buffer=100, workers_count=2), **overrides})
    columns = [[], [], [], []]
    with open_dataset(urls, cfg) as dataset:
        for (features, inputs), targets, weights in dataset:
            for column, value in zip(columns, (features, inputs, targets, weights)):
                column.append(value.numpy())
    arrays = [np.concatenate(column) for column in columns]
    order = np.argsort(arrays[0][:, 0])
    return [array[order] for array in arrays]


def test_s3_view_reads_exactly_like_the_local_copy(s3_bucket, tmp_path):
    s3_parts = write_view(f"{s3_bucket}/view")
    local_parts = write_view(str(tmp_path / "view"))
    assert count_rows(s3_parts) == count_rows(local_parts) == 250
    from_s3 = read_sorted(s3_parts)
    from_disk = read_sorted(local_parts)
    assert from_s3[0][:, 0].astype(int).tolist() == list(range(250))
    for s3_array, local_array in zip(from_s3, from_disk):
        np.testing.assert_array_equal(s3_array, local_array)


def test_s3_shards_split_the_row_groups(s3_bucket):
    parts = write_view(f"{s3_bucket}/view")
    shards = [read_sorted(parts, cur_shard=k, shard_count=2)[0][:, 0].astype(int) for k in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(np.concatenate(shards)) == list(range(250))


def test_wrapper_lets_make_batch_reader_read_an_s3_folder(s3_bucket):
    from petastorm import make_batch_reader

    folder = write_view(f"{s3_bucket}/view")[0]
    fs, _ = storage.filesystem(folder)
    with make_batch_reader(folder, filesystem=FsspecLegacyFileSystem(fs), num_epochs=1, workers_count=1) as reader:
        _close_end_of_epoch_race(reader)  # petastorm's own end-of-epoch race would drop row groups now and then
        assert sum(len(batch.features) for batch in reader) == 150


def test_petastorm_alone_still_cannot_read_s3(s3_bucket):
    """Why the wrapper exists; when this starts failing, petastorm reads S3 by itself again."""
    from petastorm import make_batch_reader

    folder = write_view(f"{s3_bucket}/view")[0]
    with pytest.raises(ValueError, match="validate_schema"):
        make_batch_reader(folder, num_epochs=1, workers_count=1)
