"""storage against a real S3 API (moto server process over HTTP)."""
import boto3
import pyarrow as pa
import pyarrow.parquet as pq

from captioning.store import storage


def test_s3_round_trip_listing_and_etag(s3_bucket, s3_endpoint):
    storage.write_text(f"{s3_bucket}/data/a.txt", "alpha")
    storage.write_bytes(f"{s3_bucket}/data/nested/b.bin", b"\x00" * 10)
    assert storage.read_text(f"{s3_bucket}/data/a.txt") == "alpha"
    assert storage.exists(f"{s3_bucket}/data/a.txt")
    assert storage.isdir(f"{s3_bucket}/data")
    files = storage.list_files(f"{s3_bucket}/data")
    assert [f.uri for f in files] == [f"{s3_bucket}/data/a.txt", f"{s3_bucket}/data/nested/b.bin"]
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=s3_bucket[5:], Key="data/a.txt")
    assert files[0].version == head["ETag"].strip('"')
    assert files[1].size == 10


def test_s3_missing_object_names_the_uri(s3_bucket):
    import pytest

    with pytest.raises(storage.MissingInputError, match="missing.txt: not found"):
        storage.read_bytes(f"{s3_bucket}/missing.txt")


def test_arrow_filesystem_writes_and_reads_parquet_on_s3(s3_bucket):
    fs, path = storage.arrow_filesystem(f"{s3_bucket}/table")
    pq.write_to_dataset(pa.table({"x": [1, 2, 3]}), path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).column("x").to_pylist() == [1, 2, 3]
