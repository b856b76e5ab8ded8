"""Feeds the training view (Parquet, local or S3) to Keras as a ``tf.data.Dataset``.

The training view has one row per (image, caption): ``image_id`` (string), ``features``
(the image vector as raw little-endian float16/float32 bytes, see ``feature_store``) and
``token_ids`` (``startseq``, word ids, ``endseq``, then 0-padding; fixed length L).

Why this shape:

* Petastorm's ``make_batch_reader`` reads whole Parquet row groups in reader threads, so
  the training loop never waits on Parquet decoding or S3 round trips, and its sharding
  gives each data-parallel worker its own row groups without reading the others.
* Row groups are cut into rows, shuffled through a bounded buffer and re-batched in
  tf.data, so batches mix captions of many row groups while memory stays bounded.
* Feature bytes are decoded by ``tf.io.decode_raw`` inside the tf.data graph, one call
  per row group, instead of one Python call per row.
* The decoder is trained with teacher forcing over whole padded sequences: the input is
  the caption without its last token, the target is the caption shifted by one, and
  padding positions get weight 0 so they add nothing to the loss.
* With ``bucket_width`` the shuffled captions are grouped by length before batching
  (``tf.data``'s ``bucket_by_sequence_length``), so each batch holds captions of about
  one length and ``trim_padding`` leaves almost no padding to compute: the LSTM's cost
  follows each caption's own length instead of the longest in a random batch.
* Vectors stay in their stored precision (float16 by default) until a batch is formed, so
  the shuffle buffer holds half the bytes; it is also capped by ``shuffle_bytes``, which
  matters for spatial grids (a 7x7x2048 float16 grid is 196 KiB a row).

Datasets are given as URLs of Parquet files or folders (e.g. several part folders of a
store). Folders are expanded here to their data files (sorted; ``_``/``.``-prefixed names
such as ``_SUCCESS`` or ``_common_metadata`` and ``.crc`` checksums skipped), so every
reader, every shard and ``count_rows`` see exactly the same files in the same order.

Two petastorm 0.13.1 problems are worked around here, each where it is handled: it cannot
read ``s3://`` with pyarrow 14 and async s3fs (``FsspecLegacyFileSystem``), and its thread
pool can end an epoch one row group early (``_close_end_of_epoch_race``).
"""
from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import pyarrow.filesystem as legacy_fs
import pyarrow.parquet as pq

from captioning.store import storage

PAD_ID = 0  # token_ids padding; startseq is 2, endseq 3
FEATURE_DTYPES = ("float16", "float32")
_COLUMNS = ("features", "token_ids")


@dataclass(frozen=True)
class ReaderConfig:
    batch_size: int
    feature_dim: int  # D: values per stored vector
    max_length: int  # L: stored token_ids length; the model sees L - 1 steps
    feature_dtype: str = "float16"  # how vectors are stored: "float16" or "float32"
    shuffle: bool = True  # shuffle row-group order and rows (through shuffle_buffer)
    seed: int | None = None  # None: a different order on every run (petastorm treats 0 like None)
    shuffle_buffer: int = 10_000  # rows held for shuffling after row groups are cut into rows
    num_epochs: int | None = 1  # None: repeat forever (Keras fit with steps_per_epoch)
    cur_shard: int | None = None  # this worker's shard, in [0, shard_count)
    shard_count: int | None = None  # data-parallel workers; each reads its own row groups
    workers_count: int = 4  # petastorm reader threads
    results_queue_size: int = 8  # row groups read ahead (petastorm keeps at least 5 per thread)
    trim_padding: bool = False  # cut each batch after its longest caption (shapes then vary by batch)
    bucket_width: int = 0  # batch captions whose lengths fall in the same bucket of this many tokens; 0: random batches
    shuffle_bytes: int = 512 * 1024 * 1024  # the shuffle buffer holds at most this many bytes of rows

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (startseq and endseq), got {self.max_length}")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ValueError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {self.feature_dtype!r}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None (forever), got {self.num_epochs}")
        if (self.cur_shard is None) != (self.shard_count is None):
            raise ValueError("cur_shard and shard_count must be given together")
        if self.shard_count is not None and not 0 <= self.cur_shard < self.shard_count:
            raise ValueError(f"cur_shard must be in [0, {self.shard_count}), got {self.cur_shard}")
        if self.workers_count < 1 or self.results_queue_size < 1:
            raise ValueError("workers_count and results_queue_size must be >= 1")
        if self.bucket_width < 0:
            raise ValueError(f"bucket_width must be >= 0 (0: no bucketing), got {self.bucket_width}")

    @property
    def buffered_rows(self) -> int:
        """Rows in the shuffle buffer: ``shuffle_buffer``, fewer when they would pass ``shuffle_bytes``."""
        row_bytes = self.feature_dim * (2 if self.feature_dtype == "float16" else 4) + self.max_length * 4
        return max(1, min(self.shuffle_buffer, self.shuffle_bytes // row_bytes))

    def bucket_boundaries(self) -> list[int]:
        """Upper bounds (exclusive) of the caption-length buckets, in tokens incl. startseq/endseq."""
        return list(range(2 + self.bucket_width, self.max_length + 1, self.bucket_width))


class FsspecLegacyFileSystem(legacy_fs.FileSystem):
    """An fsspec filesystem (s3fs here) dressed as a legacy ``pyarrow.filesystem.FileSystem``.

    Why it exists: petastorm 0.13.1 reads datasets through pyarrow's *legacy* Parquet
    dataset (``ParquetDataset(..., validate_schema=False, metadata_nthreads=10)``, then
    ``.pieces``, ``.fs.open``, ``ParquetDatasetPiece``). With pyarrow 14 that legacy code is
    only chosen when the filesystem is an instance of ``pyarrow.filesystem.FileSystem``:

    * an s3fs filesystem (what petastorm builds itself for ``s3://``, or what one passes as
      ``filesystem=``) is not one, so pyarrow picks the new Dataset API, which rejects
      petastorm's legacy keyword: ``ValueError: Keyword 'validate_schema' is not yet
      supported with the new Dataset API``;
    * pyarrow's own legacy adapter ``pyarrow.filesystem.S3FSWrapper`` lists folders with
      ``list(fs._ls(path))``, but ``_ls`` is a coroutine in async s3fs:
      ``TypeError: 'coroutine' object is not iterable``.

    This class forwards the few calls the legacy dataset and petastorm make (``isdir``,
    ``isfile``, ``exists``, ``ls``, ``walk``, ``open``) to fsspec's synchronous API, which
    works with async s3fs, and so honours the endpoint, credentials and retry settings of
    the filesystem it wraps (``storage.filesystem``: ``AWS_ENDPOINT_URL``, adaptive retries).
    Paths are fsspec paths (``bucket/key``, no scheme), as petastorm passes them.
    """

    def __init__(self, fs) -> None:
        self._fs = fs

    def isdir(self, path) -> bool:
        return self._fs.isdir(path)

    def isfile(self, path) -> bool:
        return self._fs.isfile(path)

    def exists(self, path) -> bool:
        return self._fs.exists(path)

    def ls(self, path) -> list[str]:
        return self._fs.ls(path, detail=False)

    def walk(self, path) -> Iterator[tuple[str, list[str], list[str]]]:
        """(folder, sub-folder names, file names), top-down, like ``os.walk``."""
        return self._fs.walk(path)

    def open(self, path, mode: str = "rb"):
        return self._fs.open(path, mode)

    def _isfilestore(self) -> bool:
        return False  # an object store: no real folders

    @property
    def pathsep(self) -> str:
        return "/"


def _is_data_file(relative_path: str) -> bool:
    """Parquet data, not Spark/Hadoop/pyarrow side files (``_SUCCESS``, ``_metadata``, ``.crc``)."""
    parts = [part for part in relative_path.split("/") if part]
    return bool(parts) and not any(part.startswith(("_", ".")) for part in parts) and not parts[-1].endswith(".crc")


def _files_under(url: str) -> list[str]:
    """Data files of one URL (a folder or a single file), as URLs of the same kind, sorted."""
    if not storage.isdir(url):
        if not storage.exists(url):
            raise storage.MissingInputError(f"{url}: not found; check the training view URI")
        return [url]
    root = storage.filesystem(url)[1].rstrip("/")
    found = [f.uri for f in storage.list_files(url) if _is_data_file(storage.filesystem(f.uri)[1][len(root):])]
    if not found:
        raise storage.MissingInputError(f"{url}: no Parquet files in this folder; check the training view URI")
    return found


def parquet_files(urls: str | Sequence[str]) -> list[str]:
    """Every Parquet data file of ``urls`` (files or folders), in reading order."""
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("no dataset URLs given")
    files = [file for url in url_list for file in _files_under(url)]
    if len(set(files)) != len(files):
        raise ValueError(f"{url_list}: the same Parquet file is listed twice; give each part once")
    return files


def count_rows(urls: str | Sequence[str]) -> int:
    """Rows in the dataset, from the Parquet footers only (no column data is read)."""

    def rows_in(url: str) -> int:
        fs, path = storage.arrow_filesystem(url)
        with fs.open_input_file(path) as handle:
            return pq.read_metadata(handle).num_rows

    files = parquet_files(urls)
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        return sum(pool.map(rows_in, files))


def _petastorm_source(files: list[str]) -> tuple[list[str], FsspecLegacyFileSystem | None]:
    """URLs and filesystem for ``make_batch_reader``: ``file://`` URLs locally, the wrapper on S3."""
    if all(storage.is_local(file) for file in files):
        return ["file://" + storage.filesystem(file)[1] for file in files], None  # petastorm's own local fs
    if not all(storage.is_s3(file) for file in files):
        raise ValueError(f"{files[0]}...: mix of local and S3 URLs; read one or the other")
    fs, _ = storage.filesystem(files[0])
    return ["s3://" + storage.filesystem(file)[1] for file in files], FsspecLegacyFileSystem(fs)


def _close_end_of_epoch_race(reader) -> None:
    """Stop petastorm's thread pool from ending an epoch before its last row group is read.

    petastorm 0.13.1's ``ThreadPool.get_results`` ends the data when ``all_workers_done()``
    (every ventilated row group consumed) and then ``ventilator.completed()`` (nothing left
    to ventilate) both hold, checked in that order. If the ventilator thread hands out the
    last row group between the two checks, both hold and that row group is silently
    dropped (about one read in three of a 9-row-group dataset with 2 threads). Checking
    ``completed()`` first closes the window: once it holds, every row group has been handed
    out and counted, so "all consumed" is then true only when it really is.
    """
    from petastorm.workers_pool.thread_pool import ThreadPool

    pool, ventilator = reader._workers_pool, reader.ventilator  # noqa: SLF001 - no public accessor for the pool
    if not isinstance(pool, ThreadPool):
        return
    consumed_all_handed_out = pool.all_workers_done

    def all_workers_done() -> bool:
        return ventilator.completed() and consumed_all_handed_out()

    pool.all_workers_done = all_workers_done


def _make_reader(files: list[str], config: ReaderConfig):
    from petastorm import make_batch_reader

    urls, filesystem = _petastorm_source(files)
    reader = make_batch_reader(
        urls,
        schema_fields=[re.escape(column) for column in _COLUMNS],  # image_id is never read
        reader_pool_type="thread",
        workers_count=config.workers_count,
        results_queue_size=config.results_queue_size,
        seed=config.seed,
        shuffle_row_groups=config.shuffle,
        shuffle_rows=False,  # rows are mixed by the tf.data shuffle buffer instead
        num_epochs=config.num_epochs,
        cur_shard=config.cur_shard,
        shard_count=config.shard_count,
        filesystem=filesystem,
    )
    _close_end_of_epoch_race(reader)
    return reader


def _decode_row_group(features, token_ids, config: ReaderConfig):
    """One row group of raw columns -> (vectors [n, D] as stored (float16/float32), token_ids int32 [n, L])."""
    import tensorflow as tf

    raw_dtype = tf.float16 if config.feature_dtype == "float16" else tf.float32
    values = tf.io.decode_raw(features, raw_dtype, little_endian=True)  # [n, bytes / itemsize]
    tf.debugging.assert_equal(
        tf.shape(values)[1], config.feature_dim,
        message=f"stored vectors do not hold feature_dim={config.feature_dim} {config.feature_dtype} values",
    )
    vectors = tf.reshape(values, [-1, config.feature_dim])  # [n, D], cast to float32 once batched
    tokens = tf.cast(token_ids, tf.int32)  # [n, L?]
    tf.debugging.assert_equal(
        tf.shape(tokens)[1], config.max_length,
        message=f"stored token_ids are not max_length={config.max_length} long",
    )
    tokens = tf.reshape(tokens, [-1, config.max_length])  # [n, L]
    return vectors, tokens


def trim_padding(model_inputs, targets, weights):
    """Drop the positions where every caption of a teacher-forcing batch is padding.

    ``((vectors [B, D], inputs [B, T]), targets [B, T], weights [B, T])`` -> the same with
    T' <= T: up to the longest caption's last target (endseq). Padding only follows a
    caption and the LSTM is causal, so the kept positions compute exactly what they would
    with the padding, and the dropped ones carry zero weight: the loss (a mean over real
    words) and its gradients are unchanged, for less work. Shapes then vary by batch.
    """
    import tensorflow as tf

    vectors, inputs = model_inputs
    keep = tf.maximum(tf.cast(tf.reduce_max(tf.reduce_sum(weights, axis=1)), tf.int32), 1)  # real targets of the longest caption
    return (vectors, inputs[:, :keep]), targets[:, :keep], weights[:, :keep]


def _teacher_forcing(vectors, tokens):
    """A batch of (vectors [B, D], tokens [B, L]) -> ((vectors float32, inputs), targets, weights)."""
    import tensorflow as tf

    vectors = tf.cast(vectors, tf.float32)  # [B, D]
    inputs = tokens[:, :-1]  # [B, L-1]: startseq .. last word (or padding)
    targets = tokens[:, 1:]  # [B, L-1]: first word .. endseq, then padding
    weights = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)  # [B, L-1]
    return (vectors, inputs), targets, weights


def _training_pipeline(row_groups, config: ReaderConfig):
    """Row-group batches from petastorm -> shuffled, re-batched teacher-forcing examples."""
    import tensorflow as tf

    rows = row_groups.map(
        lambda group: _decode_row_group(group.features, group.token_ids, config),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).unbatch()  # elements: (vector [D], tokens [L])
    if config.shuffle:
        rows = rows.shuffle(config.buffered_rows, seed=config.seed, reshuffle_each_iteration=True)
    if config.bucket_width:
        # ([B, D], [B, L]) of captions whose lengths share a bucket; each bucket's last batch may be smaller
        batches = rows.bucket_by_sequence_length(
            lambda vector, tokens: tf.reduce_sum(tf.cast(tf.not_equal(tokens, PAD_ID), tf.int32)),
            bucket_boundaries=config.bucket_boundaries(),
            bucket_batch_sizes=[config.batch_size] * (len(config.bucket_boundaries()) + 1),
            no_padding=True,
        )
    else:
        batches = rows.batch(config.batch_size)  # ([B, D], [B, L]); the last batch may be smaller
    examples = batches.map(_teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE)  # ((B, D), (B, L-1)), (B, L-1), (B, L-1)
    if config.trim_padding:
        examples = examples.map(trim_padding, num_parallel_calls=tf.data.AUTOTUNE)  # ... (B, T), T <= L-1
    return examples.prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def open_dataset(urls: str | Sequence[str], config: ReaderConfig):
    """Yield a ``tf.data.Dataset`` of ``((features [B, D] float32, input_ids [B, L-1] int32),
    target_ids [B, L-1] int32, weights [B, L-1] float32)`` over the Parquet at ``urls``.

    ``urls``: one URL or a list (local path, ``file://`` or ``s3://``; files or folders).
    The dataset is only valid inside the ``with`` block: on exit the reader threads are
    stopped and joined. With ``num_epochs=1`` each row (of this shard) appears once.
    With ``trim_padding`` the L-1 positions become T <= L-1 per batch (see ``trim_padding``);
    with ``bucket_width`` each batch holds captions of about one length.
    """
    from petastorm.tf_utils import make_petastorm_dataset

    reader = _make_reader(parquet_files(urls), config)
    try:
        yield _training_pipeline(make_petastorm_dataset(reader), config)
    finally:
        reader.stop()
        reader.join()
