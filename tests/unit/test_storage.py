import os

import pytest

from captioning.store import storage


def test_local_write_read_list_and_delete(tmp_path):
    base = str(tmp_path / "out")
    storage.write_text(storage.join(base, "a", "x.txt"), "hello")
    storage.write_bytes(storage.join(base, "b.bin"), b"\x00\x01")
    storage.write_text(storage.join(base, ".hidden"), "skip me")
    assert storage.read_text(storage.join(base, "a", "x.txt")) == "hello"
    files = storage.list_files(base)
    assert [os.path.relpath(f.uri, base) for f in files] == ["a/x.txt", "b.bin"]
    assert files[0].size == 5 and files[0].version.startswith("5-")
    storage.delete(base, recursive=True)
    assert not storage.exists(base)


def test_file_uri_and_plain_path_are_the_same_place(tmp_path):
    storage.write_text(f"file://{tmp_path}/f.txt", "same")
    assert storage.read_text(str(tmp_path / "f.txt")) == "same"
    assert storage.list_files(f"file://{tmp_path}")[0].uri == f"file://{tmp_path}/f.txt"


def test_local_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "data.json"
    storage.write_text(str(target), "v1")
    storage.write_text(str(target), "v2")
    assert target.read_text() == "v2"
    assert sorted(os.listdir(tmp_path)) == ["data.json"]


def test_missing_input_names_the_uri(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(storage.MissingInputError, match="nope.txt: not found"):
        storage.read_bytes(missing)
    with pytest.raises(storage.MissingInputError, match="nope"):
        storage.list_files(str(tmp_path / "nope"))


def test_iter_lines_strips_crlf_and_bom(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n\r\nthree")
    assert list(storage.iter_lines(str(path))) == [(1, "one"), (2, "two"), (3, ""), (4, "three")]


def test_unsupported_scheme_is_refused():
    with pytest.raises(storage.StorageError, match="unsupported URI scheme"):
        storage.read_bytes("ftp://host/file")


def test_join_parent_basename_keep_the_scheme():
    assert storage.join("s3://b/p", "x", "y.jpg") == "s3://b/p/x/y.jpg"
    assert storage.parent("s3://b/p/x/y.jpg") == "s3://b/p/x"
    assert storage.basename("s3://b/p/x/y.jpg") == "y.jpg"
