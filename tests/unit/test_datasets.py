"""Flickr8k readers on small hand-made datasets in tmp_path, one quirk at a time."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from captioning.data import dataset_issues
from captioning.data.caption_files import CaptionRecord, read_captions
from captioning.data.dataset_issues import ISSUE_KINDS, DatasetIssue
from captioning.data.flickr8k import Flickr8kDataset, list_images, load_dataset
from captioning.data.layout import SPLIT_FILES, DatasetError, locate
from captioning.data.splits import derive_splits, read_split_lists

IMAGE_BYTES = b"\xff\xd8\xff\xe0 not a real jpeg"


def make_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Write ``files`` (relative path -> content) below ``root``; str is written as UTF-8."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return root


def images(folder: str, *names: str) -> dict[str, bytes]:
    return {f"{folder}/{name}": IMAGE_BYTES for name in names}


def token_lines(*entries: tuple[str, int, str]) -> str:
    return "".join(f"{image}#{n}\t{text}\n" for image, n, text in entries)


def split_files(text_dir: str, train=(), dev=(), test=()) -> dict[str, str]:
    prefix = f"{text_dir}/" if text_dir else ""
    return {
        prefix + SPLIT_FILES["train"]: "".join(f"{name}\n" for name in train),
        prefix + SPLIT_FILES["dev"]: "".join(f"{name}\n" for name in dev),
        prefix + SPLIT_FILES["test"]: "".join(f"{name}\n" for name in test),
    }


def clean_token_dataset(root: Path, image_folder="Flicker8k_Dataset", text_dir="Flickr8k_text") -> Path:
    prefix = f"{text_dir}/" if text_dir else ""
    files = {
        **images(image_folder, "1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg"),
        prefix + "Flickr8k.token.txt": token_lines(
            ("1000268201_693b08cb0e.jpg", 0, "A child in a pink dress is climbing up a set of stairs ."),
            ("1000268201_693b08cb0e.jpg", 1, "A girl going into a wooden building ."),
            ("1001773457_577c3a7d70.jpg", 0, "A black dog and a spotted dog are fighting"),
            ("1002674143_1b742ab4b8.jpg", 0, "A little girl covered in paint sits in front of a painted rainbow ."),
        ),
        **split_files(text_dir, train=["1000268201_693b08cb0e.jpg"], dev=["1001773457_577c3a7d70.jpg"], test=["1002674143_1b742ab4b8.jpg"]),
    }
    return make_tree(root, files)


def issues_of(dataset: Flickr8kDataset, reason: str) -> list[DatasetIssue]:
    return [issue for issue in dataset.issues if issue.reason == reason]


def non_blank_lines(path: Path) -> int:
    text = path.read_bytes().decode("utf-8-sig")
    return sum(1 for line in re.split(r"\r\n|\n|\r", text) if line.strip())


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("image_folder", ["Flicker8k_Dataset", "Flickr8k_Dataset"])
@pytest.mark.parametrize("text_dir", ["Flickr8k_text", ""])
def test_token_layout_in_every_folder_arrangement(tmp_path, image_folder, text_dir):
    clean_token_dataset(tmp_path, image_folder, text_dir)

    dataset = load_dataset(str(tmp_path))

    text_folder = tmp_path / text_dir if text_dir else tmp_path
    assert dataset.layout == "token"
    assert dataset.images_uri == str(tmp_path / image_folder)
    assert dataset.captions_uri == str(text_folder / "Flickr8k.token.txt")
    assert dataset.split_uris["dev"] == str(text_folder / "Flickr_8k.devImages.txt")
    assert sorted(dataset.images) == ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg"]
    assert dataset.captions[0] == CaptionRecord(
        "1000268201_693b08cb0e.jpg", 0, "A child in a pink dress is climbing up a set of stairs .", f"{dataset.captions_uri}:1"
    )
    assert [(r.image_id, r.caption_index) for r in dataset.captions] == [
        ("1000268201_693b08cb0e.jpg", 0),
        ("1000268201_693b08cb0e.jpg", 1),
        ("1001773457_577c3a7d70.jpg", 0),
        ("1002674143_1b742ab4b8.jpg", 0),
    ]
    assert dict(dataset.splits) == {
        "train": frozenset({"1000268201_693b08cb0e.jpg"}),
        "dev": frozenset({"1001773457_577c3a7d70.jpg"}),
        "test": frozenset({"1002674143_1b742ab4b8.jpg"}),
    }
    assert dataset.issues == ()
    assert dataset.issue_counts() == {}


def test_helpers_on_a_loaded_dataset(tmp_path):
    dataset = load_dataset(str(clean_token_dataset(tmp_path)))

    assert dataset.split_of("1001773457_577c3a7d70.jpg") == "dev"
    assert dataset.split_of("unknown.jpg") is None
    grouped = dataset.captions_by_image()
    assert [r.caption_index for r in grouped["1000268201_693b08cb0e.jpg"]] == [0, 1]
    rows = dataset.caption_rows()
    assert rows[2] == (
        "1001773457_577c3a7d70.jpg", "dev", 0, "A black dog and a spotted dog are fighting", f"{dataset.captions_uri}:3"
    )
    assert dataset.images["1000268201_693b08cb0e.jpg"].size == len(IMAGE_BYTES)
    with pytest.raises(TypeError):
        dataset.splits["train"] = frozenset()  # type: ignore[index]


def test_file_uri_root(tmp_path):
    clean_token_dataset(tmp_path)

    dataset = load_dataset(f"file://{tmp_path}/")

    assert dataset.root == f"file://{tmp_path}"
    assert dataset.images_uri == f"file://{tmp_path}/Flicker8k_Dataset"
    assert len(dataset.captions) == 4
    assert dataset.images["1001773457_577c3a7d70.jpg"].uri == f"file://{tmp_path}/Flicker8k_Dataset/1001773457_577c3a7d70.jpg"


def test_token_file_is_preferred_over_captions_csv(tmp_path):
    clean_token_dataset(tmp_path, text_dir="")
    make_tree(tmp_path, {"captions.txt": "image,caption\n1000268201_693b08cb0e.jpg,Other text\n"})

    dataset = load_dataset(str(tmp_path))

    assert dataset.layout == "token"
    assert len(dataset.captions) == 4


def kaggle_dataset(root: Path) -> Path:
    csv_text = (
        "image,caption\n"
        "1000268201_693b08cb0e.jpg,A child in a pink dress is climbing up a set of stairs in an entry way .\n"
        "1000268201_693b08cb0e.jpg,A girl , in pink , going into a wooden building .\n"
        '1000268201_693b08cb0e.jpg,"A little girl, climbing, into a playhouse ."\n'
        '1001773457_577c3a7d70.jpg,"She said ""woof"", the dog ."\n'
        "1001773457_577c3a7d70.jpg,A black dog and a tri-colored dog playing with each other on the road .\n"
    )
    return make_tree(root, {**images("Images", "1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"), "captions.txt": csv_text})


def test_kaggle_layout_reads_quoted_and_unquoted_commas(tmp_path):
    kaggle_dataset(tmp_path)

    dataset = load_dataset(str(tmp_path))

    assert dataset.layout == "kaggle"
    assert dataset.images_uri == str(tmp_path / "Images")
    assert [(r.image_id, r.caption_index, r.text) for r in dataset.captions] == [
        ("1000268201_693b08cb0e.jpg", 0, "A child in a pink dress is climbing up a set of stairs in an entry way ."),
        ("1000268201_693b08cb0e.jpg", 1, "A girl , in pink , going into a wooden building ."),
        ("1000268201_693b08cb0e.jpg", 2, "A little girl, climbing, into a playhouse ."),
        ("1001773457_577c3a7d70.jpg", 0, 'She said "woof", the dog .'),
        ("1001773457_577c3a7d70.jpg", 1, "A black dog and a tri-colored dog playing with each other on the road ."),
    ]
    assert dataset.captions[0].source == f"{tmp_path / 'captions.txt'}:2"
    assert dataset.issue_counts() == {"splits_derived": 1}
    assert dataset.split_uris == {}
    derived = issues_of(dataset, "splits_derived")[0]
    assert derived.kind == "noted" and derived.uri == str(tmp_path) and "seed 0" in derived.detail
    assert frozenset().union(*dataset.splits.values()) == frozenset(dataset.images)


def test_kaggle_text_folder_and_uppercase_header(tmp_path):
    make_tree(
        tmp_path,
        {
            **images("Images", "a1.jpg"),
            "Flickr8k_text/captions.txt": "Image , Caption\na1.jpg,One\na1.jpg,Two, three\n",
        },
    )

    dataset = load_dataset(str(tmp_path))

    assert [(r.caption_index, r.text, r.source.rsplit(":", 1)[1]) for r in dataset.captions] == [
        (0, "One", "2"),
        (1, "Two, three", "3"),
    ]


# --------------------------------------------------------------------------- quirks


QUIRKY_TOKEN = (
    "\ufeff"
    "1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\r\n"  # 1 kept (BOM, CRLF)
    "  1000268201_693b08cb0e.jpg#1 \t  A girl going into a wooden building .  \r\n"  # 2 kept, whitespace
    "\r\n"  # 3 blank
    "   \t \r\n"  # 4 blank (whitespace only)
    "2258277193_586949ec62.jpg#0\tA man stands next to a bus .\r\n"  # 5 kept
    "2258277193_586949ec62.jpg.1#0\tA man standing by a bus .\r\n"  # 6 another image: 2258277193_586949ec62.jpg has captions of its own
    "2258277193_586949ec62.jpg.1#1\tA man in front of a bus .\r\n"  # 7 another image, the same
    "9999999999_missing000.jpg#0\tA caption for an image we do not have .\r\n"  # 8 missing image
    "1001773457_577c3a7d70.jpg#0\t   \r\n"  # 9 empty caption
    "this line is not a caption\r\n"  # 10 malformed
    "1001773457_577c3a7d70.jpg#x\tbad number\r\n"  # 11 malformed
    "notes.txt#0\tnot an image id\r\n"  # 12 malformed (not an image name)
    "1001773457_577c3a7d70.jpg#1 Two dogs , spaces instead of a tab .\r\n"  # 13 space separator, kept
    "1001773457_577c3a7d70.jpg#1\tAnother caption numbered 1 .\r\n"  # 14 duplicate
)


def quirky_dataset(root: Path) -> Path:
    files = {
        **images(
            "Flicker8k_Dataset",
            "1000268201_693b08cb0e.jpg",
            "2258277193_586949ec62.jpg",
            "1001773457_577c3a7d70.jpg",
            "3333333333_nocaption00.jpg",
            "4444444444_nosplit0000.jpg",
        ),
        "Flicker8k_Dataset/readme.txt": b"not an image",
        "Flicker8k_Dataset/thumbs/1000268201_693b08cb0e.jpg": IMAGE_BYTES,
        "Flickr8k_text/Flickr8k.token.txt": QUIRKY_TOKEN.encode("utf-8"),
        "Flickr8k_text/Flickr_8k.trainImages.txt": "\ufeff1000268201_693b08cb0e.jpg\r\n2258277193_586949ec62.jpg\r\n\r\n",
        "Flickr8k_text/Flickr_8k.devImages.txt": (
            "1001773457_577c3a7d70.jpg\n"
            " 3333333333_nocaption00.jpg  \n"
            "1001773457_577c3a7d70.jpg\n"  # duplicate entry
            "5555555555_notthere000.jpg\n"  # image not in the folder
            "not an image name\n"
        ),
        "Flickr8k_text/Flickr_8k.testImages.txt": "1000268201_693b08cb0e.jpg\n",  # also in train
    }
    return make_tree(root, files)


def test_every_quirk_is_counted(tmp_path):
    quirky_dataset(tmp_path)

    dataset = load_dataset(str(tmp_path))

    assert dataset.issue_counts() == {
        "blank_line": 3,
        "byte_order_mark": 2,
        "caption_for_missing_image": 3,
        "crlf_line_endings": 2,
        "duplicate_caption": 1,
        "duplicate_split_entry": 1,
        "empty_caption": 1,
        "image_in_no_split": 1,
        "image_in_several_splits": 1,
        "image_without_captions": 2,
        "malformed_line": 4,
        "non_image_file": 2,
        "space_separator": 1,
        "split_image_missing": 1,
        "whitespace_stripped": 2,
    }


def test_quirky_caption_lines_become_the_expected_records(tmp_path):
    quirky_dataset(tmp_path)

    dataset = load_dataset(str(tmp_path))

    assert [(r.image_id, r.caption_index, r.text, int(r.source.rsplit(":", 1)[1])) for r in dataset.captions] == [
        ("1000268201_693b08cb0e.jpg", 0, "A child in a pink dress .", 1),
        ("1000268201_693b08cb0e.jpg", 1, "A girl going into a wooden building .", 2),
        ("2258277193_586949ec62.jpg", 0, "A man stands next to a bus .", 5),
        ("1001773457_577c3a7d70.jpg", 1, "Two dogs , spaces instead of a tab .", 13),
    ]


def test_caption_issues_name_file_and_line(tmp_path):
    quirky_dataset(tmp_path)
    token_uri = str(tmp_path / "Flickr8k_text" / "Flickr8k.token.txt")

    dataset = load_dataset(str(tmp_path))

    by_line = {(i.reason, i.line) for i in dataset.issues if i.uri == token_uri}
    assert by_line == {
        ("byte_order_mark", 1),
        ("crlf_line_endings", 1),
        ("whitespace_stripped", 2),
        ("blank_line", 3),
        ("blank_line", 4),
        ("caption_for_missing_image", 6),
        ("caption_for_missing_image", 7),
        ("caption_for_missing_image", 8),
        ("empty_caption", 9),
        ("malformed_line", 10),
        ("malformed_line", 11),
        ("malformed_line", 12),
        ("space_separator", 13),
        ("duplicate_caption", 14),
    }
    crlf = issues_of(dataset, "crlf_line_endings")
    assert any(i.uri == token_uri and i.detail.startswith("14 of 14 lines") for i in crlf)
    duplicate = next(i for i in dataset.issues if i.reason == "duplicate_caption" and i.line == 14)
    assert "1001773457_577c3a7d70.jpg#1" in duplicate.detail and "line 13" in duplicate.detail
    assert str(duplicate) == f"{token_uri}:14: duplicate_caption: {duplicate.detail}"
    variant = next(i for i in dataset.issues if i.line == 6)
    assert "2258277193_586949ec62.jpg.1 is not in the image folder" in variant.detail


def test_no_caption_line_is_silently_dropped(tmp_path):
    quirky_dataset(tmp_path)
    token = tmp_path / "Flickr8k_text" / "Flickr8k.token.txt"

    dataset = load_dataset(str(tmp_path))

    dropped = [i for i in dataset.issues if i.uri == str(token) and i.dropped and i.reason != "blank_line"]
    assert len(dataset.captions) + len(dropped) == non_blank_lines(token) == 12
    dropped_lines = [i.line for i in dropped]
    assert len(dropped_lines) == len(set(dropped_lines)), "a line is dropped at most once"
    kept_lines = {int(r.source.rsplit(":", 1)[1]) for r in dataset.captions}
    assert kept_lines.isdisjoint(dropped_lines)


def test_no_kaggle_line_is_silently_dropped(tmp_path):
    csv_text = (
        "\ufeffimage,caption\r\n"
        "a1.jpg,One , two\r\n"
        "a1.jpg.1,Suffixed\r\n"
        "\r\n"
        "gone.jpg,Missing image\r\n"
        "a1.jpg,\r\n"
        "no comma at all\r\n"
        " a1.jpg , padded \r\n"
        "b2.jpg,Last line without a line end"
    )
    make_tree(tmp_path, {**images("Images", "a1.jpg", "b2.jpg"), "captions.txt": csv_text})
    captions = tmp_path / "captions.txt"

    dataset = load_dataset(str(captions.parent))

    dropped = [i for i in dataset.issues if i.uri == str(captions) and i.dropped and i.reason != "blank_line"]
    header = 1
    assert len(dataset.captions) + len(dropped) == non_blank_lines(captions) - header
    assert [(r.image_id, r.caption_index, r.text) for r in dataset.captions] == [
        ("a1.jpg", 0, "One , two"),
        ("a1.jpg", 2, "padded"),
        ("b2.jpg", 0, "Last line without a line end"),
    ]
    assert {(i.reason, i.line) for i in dropped} == {
        ("caption_for_missing_image", 3),  # a1.jpg has captions of its own: a1.jpg.1 is another image
        ("caption_for_missing_image", 5),
        ("empty_caption", 6),
        ("malformed_line", 7),
    }
    assert dataset.issue_counts()["byte_order_mark"] == 1
    assert dataset.issue_counts()["whitespace_stripped"] == 1


def test_exact_id_wins_over_a_suffixed_variant_wherever_it_stands(tmp_path):
    variant_first = token_lines(
        ("2258277193_586949ec62.jpg.1", 0, "Variant caption zero ."),
        ("2258277193_586949ec62.jpg.1", 1, "Variant caption one ."),
        ("2258277193_586949ec62.jpg", 0, "Exact caption zero ."),
        ("2258277193_586949ec62.jpg", 1, "Exact caption one ."),
    )
    make_tree(
        tmp_path,
        {
            **images("Flicker8k_Dataset", "2258277193_586949ec62.jpg"),
            "Flickr8k.token.txt": variant_first,
            **split_files("", train=["2258277193_586949ec62.jpg"]),
        },
    )

    dataset = load_dataset(str(tmp_path))

    assert [(r.image_id, r.caption_index, r.text) for r in dataset.captions] == [
        ("2258277193_586949ec62.jpg", 0, "Exact caption zero ."),
        ("2258277193_586949ec62.jpg", 1, "Exact caption one ."),
    ]
    assert [(i.reason, i.line) for i in dataset.issues] == [("caption_for_missing_image", 1), ("caption_for_missing_image", 2)]


def test_suffixed_id_without_collision_is_kept_under_the_plain_id(tmp_path):
    make_tree(
        tmp_path,
        {
            **images("Flicker8k_Dataset", "2258277193_586949ec62.jpg"),
            "Flickr8k.token.txt": token_lines(("2258277193_586949ec62.jpg.1", 0, "A man by a bus ."), ("2258277193_586949ec62.jpg.1", 1, "A bus .")),
            **split_files("", train=["2258277193_586949ec62.jpg.1"]),
        },
    )

    dataset = load_dataset(str(tmp_path))

    assert [(r.image_id, r.caption_index) for r in dataset.captions] == [("2258277193_586949ec62.jpg", 0), ("2258277193_586949ec62.jpg", 1)]
    assert dataset.splits["train"] == frozenset({"2258277193_586949ec62.jpg"})
    assert dataset.issue_counts() == {"id_suffix_normalised": 3}
    assert all(i.kind == "normalised" for i in dataset.issues)


def test_image_folder_quirks(tmp_path):
    quirky_dataset(tmp_path)
    folder = tmp_path / "Flicker8k_Dataset"

    dataset = load_dataset(str(tmp_path))

    assert "readme.txt" not in dataset.images
    non_images = {i.uri for i in issues_of(dataset, "non_image_file")}
    assert non_images == {str(folder / "readme.txt"), str(folder / "thumbs" / "1000268201_693b08cb0e.jpg")}
    assert {i.uri for i in issues_of(dataset, "image_without_captions")} == {
        str(folder / "3333333333_nocaption00.jpg"),
        str(folder / "4444444444_nosplit0000.jpg"),
    }
    no_split = issues_of(dataset, "image_in_no_split")
    assert [(i.uri, i.line) for i in no_split] == [(str(folder / "4444444444_nosplit0000.jpg"), None)]
    assert dataset.split_of("4444444444_nosplit0000.jpg") is None
    assert "4444444444_nosplit0000.jpg" in dataset.images


def test_split_list_quirks(tmp_path):
    quirky_dataset(tmp_path)
    text = tmp_path / "Flickr8k_text"

    dataset = load_dataset(str(tmp_path))

    assert dict(dataset.splits) == {
        "train": frozenset({"1000268201_693b08cb0e.jpg", "2258277193_586949ec62.jpg"}),
        "dev": frozenset({"1001773457_577c3a7d70.jpg", "3333333333_nocaption00.jpg"}),
        "test": frozenset(),
    }
    dev = str(text / SPLIT_FILES["dev"])
    test = str(text / SPLIT_FILES["test"])
    split_issues = {(i.reason, i.uri, i.line) for i in dataset.issues if i.uri in (dev, test)}
    assert split_issues == {
        ("whitespace_stripped", dev, 2),
        ("duplicate_split_entry", dev, 3),
        ("split_image_missing", dev, 4),
        ("malformed_line", dev, 5),
        ("image_in_several_splits", test, 1),
    }
    several = issues_of(dataset, "image_in_several_splits")[0]
    assert "train" in several.detail


def test_no_split_line_is_silently_dropped(tmp_path):
    quirky_dataset(tmp_path)
    text = tmp_path / "Flickr8k_text"

    dataset = load_dataset(str(tmp_path))

    for split, name in SPLIT_FILES.items():
        path = text / name
        dropped = [i for i in dataset.issues if i.uri == str(path) and i.dropped and i.reason != "blank_line"]
        assert len(dataset.splits[split]) + len(dropped) == non_blank_lines(path), split


def test_blank_lines_are_the_only_other_dropped_lines(tmp_path):
    quirky_dataset(tmp_path)
    token = tmp_path / "Flickr8k_text" / "Flickr8k.token.txt"

    dataset = load_dataset(str(tmp_path))

    total_lines = len(re.split(r"\r\n|\n|\r", token.read_bytes().decode("utf-8-sig").rstrip("\r\n")))
    dropped = [i for i in dataset.issues if i.uri == str(token) and i.dropped]
    assert len(dataset.captions) + len(dropped) == total_lines == 14


def test_every_issue_reason_is_documented_with_its_kind():
    documented = dict(re.findall(r"^([a-z_]+)\s+(dropped|normalised|noted)\s", dataset_issues.__doc__, re.MULTILINE))
    assert documented == dict(ISSUE_KINDS)


# --------------------------------------------------------------------------- readers alone


def test_read_captions_without_an_image_list_keeps_everything(tmp_path):
    path = make_tree(tmp_path, {"t.txt": token_lines(("x.jpg", 0, "one"), ("y.png", 3, "two"))}) / "t.txt"

    records, issues = read_captions(str(path), "token")

    assert [(r.image_id, r.caption_index, r.text) for r in records] == [("x.jpg", 0, "one"), ("y.png", 3, "two")]
    assert issues == ()


def test_read_split_lists_with_missing_lists_gives_empty_splits(tmp_path):
    path = make_tree(tmp_path, {"train.txt": "a.jpg\nb.jpg\n"}) / "train.txt"

    splits, issues = read_split_lists({"train": str(path)})

    assert splits == {"train": frozenset({"a.jpg", "b.jpg"}), "dev": frozenset(), "test": frozenset()}
    assert issues == ()


def test_list_images_keeps_every_image_extension(tmp_path):
    names = ("a.JPG", "b.jpeg", "c.png", "d.gif", "e.webp", "f.bmp")
    folder = make_tree(tmp_path, {**{f"I/{n}": IMAGE_BYTES for n in names}, "I/notes.txt": b"text"}) / "I"

    found, issues = list_images(str(folder))

    assert sorted(found) == list(names)
    assert [(i.reason, i.uri) for i in issues] == [("non_image_file", str(folder / "notes.txt"))]


# --------------------------------------------------------------------------- splits


def test_derived_splits_are_deterministic_disjoint_and_proportional():
    ids = [f"{i:010d}_{i * 7919 % 100000:05d}.jpg" for i in range(8000)]

    first = derive_splits(ids)
    again = derive_splits(reversed(ids))
    other_seed = derive_splits(ids, seed=1)

    assert first == again
    assert {name: len(members) for name, members in first.items()} == {"train": 6000, "dev": 1000, "test": 1000}
    assert first["train"] | first["dev"] | first["test"] == frozenset(ids)
    assert not (first["train"] & first["dev"]) and not (first["dev"] & first["test"]) and not (first["train"] & first["test"])
    assert other_seed != first
    assert {name: len(members) for name, members in other_seed.items()} == {"train": 6000, "dev": 1000, "test": 1000}


def test_derived_split_sizes_round_for_any_count():
    ids = [f"img{i}.jpg" for i in range(8091)]

    sizes = {name: len(members) for name, members in derive_splits(ids).items()}

    assert sizes == {"train": 6068, "dev": 1012, "test": 1011}
    assert derive_splits([]) == {"train": frozenset(), "dev": frozenset(), "test": frozenset()}


def test_derived_splits_do_not_follow_file_order():
    ids = [f"img{i:04d}.jpg" for i in range(800)]

    train = derive_splits(ids)["train"]

    assert sorted(train) != ids[:600]


def test_load_dataset_derives_the_same_splits_with_the_same_seed(tmp_path):
    names = [f"{i:04d}_img.jpg" for i in range(40)]
    lines = "image,caption\n" + "".join(f"{name},Caption {name}\n" for name in names)
    make_tree(tmp_path, {**images("Images", *names), "captions.txt": lines})

    first = load_dataset(str(tmp_path))
    second = load_dataset(str(tmp_path))
    reseeded = load_dataset(str(tmp_path), split_seed=7)

    assert first.splits == second.splits == derive_splits(names)
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 30, "dev": 5, "test": 5}
    assert reseeded.splits == derive_splits(names, seed=7) != first.splits
    assert "seed 7" in issues_of(reseeded, "splits_derived")[0].detail


def test_token_layout_without_split_lists(tmp_path):
    make_tree(tmp_path, {**images("Flicker8k_Dataset", "a.jpg", "b.jpg"), "Flickr8k.token.txt": token_lines(("a.jpg", 0, "x"), ("b.jpg", 0, "y"))})

    with pytest.raises(DatasetError, match=re.escape(SPLIT_FILES["train"])) as error:
        load_dataset(str(tmp_path))
    assert "require_splits=False" in str(error.value)

    dataset = load_dataset(str(tmp_path), require_splits=False)
    assert dataset.issue_counts() == {"splits_derived": 1}
    assert frozenset().union(*dataset.splits.values()) == {"a.jpg", "b.jpg"}


# --------------------------------------------------------------------------- fatal errors


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_missing_root_says_what_was_expected(tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(DatasetError) as error:
        load_dataset(str(missing))

    message = str(error.value)
    assert str(missing) in message and "not found" in message
    for name in ("Flicker8k_Dataset/", "Flickr8k_Dataset/", "Images/", "Flickr8k.token.txt", "captions.txt", "Flickr8k_text/"):
        assert name in message


def test_root_that_is_a_file(tmp_path):
    path = make_tree(tmp_path, {"file.txt": "x"}) / "file.txt"

    with pytest.raises(DatasetError, match="is a file"):
        load_dataset(str(path))


def test_no_image_folder_lists_the_names_tried(tmp_path):
    make_tree(tmp_path, {"Flickr8k.token.txt": token_lines(("a.jpg", 0, "x")), "photos/a.jpg": IMAGE_BYTES})

    with pytest.raises(DatasetError) as error:
        load_dataset(str(tmp_path))

    message = str(error.value)
    assert str(tmp_path) in message and "no image folder" in message
    assert "Flicker8k_Dataset/, Flickr8k_Dataset/, Images/" in message


def test_image_folder_without_images(tmp_path):
    make_tree(tmp_path, {"Images/notes.txt": "x", "captions.txt": "image,caption\na.jpg,x\n"})

    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "Images")) + ".*no image files"):
        load_dataset(str(tmp_path))


def test_no_caption_file_lists_the_names_tried(tmp_path):
    make_tree(tmp_path, images("Images", "a.jpg"))

    with pytest.raises(DatasetError) as error:
        load_dataset(str(tmp_path))

    message = str(error.value)
    assert "no caption file" in message
    for tried in (tmp_path / "Flickr8k.token.txt", tmp_path / "Flickr8k_text" / "Flickr8k.token.txt", tmp_path / "captions.txt", tmp_path / "Flickr8k_text" / "captions.txt"):
        assert str(tried) in message


def test_some_split_lists_but_not_all(tmp_path):
    clean_token_dataset(tmp_path)
    (tmp_path / "Flickr8k_text" / SPLIT_FILES["dev"]).unlink()

    with pytest.raises(DatasetError) as error:
        load_dataset(str(tmp_path), require_splits=False)

    message = str(error.value)
    assert "Flickr_8k.devImages.txt missing" in message
    assert "Flickr_8k.trainImages.txt" in message and str(tmp_path / "Flickr8k_text") in message


def test_binary_caption_file(tmp_path):
    make_tree(tmp_path, {**images("Images", "a.jpg"), "captions.txt": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"})

    with pytest.raises(DatasetError) as error:
        load_dataset(str(tmp_path))

    message = str(error.value)
    assert "captions.txt" in message and "not a text file" in message


def test_caption_file_with_nul_bytes(tmp_path):
    make_tree(tmp_path, {**images("Images", "a.jpg"), "captions.txt": b"image,caption\x00\x00\n"})

    with pytest.raises(DatasetError, match=r"captions\.txt.*not a text file"):
        load_dataset(str(tmp_path))


def test_binary_split_list(tmp_path):
    clean_token_dataset(tmp_path)
    (tmp_path / "Flickr8k_text" / SPLIT_FILES["test"]).write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")

    with pytest.raises(DatasetError) as error:
        load_dataset(str(tmp_path))

    assert "Flickr_8k.testImages.txt" in str(error.value) and "not a text file" in str(error.value)


def test_caption_file_where_no_line_parses(tmp_path):
    make_tree(
        tmp_path,
        {
            **images("Flicker8k_Dataset", "a.jpg"),
            "Flickr8k.token.txt": "image,caption\na.jpg,A dog .\na.jpg,A cat .\n",  # a Kaggle CSV under the token name
            **split_files("", train=["a.jpg"]),
        },
    )

    with pytest.raises(DatasetError) as error:
        load_dataset(str(tmp_path))

    message = str(error.value)
    assert "Flickr8k.token.txt" in message and "no line could be read" in message
    assert "line 1" in message and "<TAB>" in message


def test_kaggle_file_where_no_line_parses(tmp_path):
    make_tree(tmp_path, {**images("Images", "a.jpg"), "captions.txt": "image,caption\nsome prose, not captions\nmore prose\n"})

    with pytest.raises(DatasetError, match=r"captions\.txt: no line could be read as a caption \(line 2"):
        load_dataset(str(tmp_path))


def test_empty_caption_file(tmp_path):
    make_tree(tmp_path, {**images("Images", "a.jpg"), "captions.txt": "image,caption\n\n"})

    with pytest.raises(DatasetError, match=r"captions\.txt: caption file has no caption lines"):
        load_dataset(str(tmp_path))


def test_split_list_where_no_line_parses(tmp_path):
    clean_token_dataset(tmp_path)
    (tmp_path / "Flickr8k_text" / SPLIT_FILES["train"]).write_text("This is a README\nnot a list of images\n")

    with pytest.raises(DatasetError, match=r"Flickr_8k\.trainImages\.txt: no line is an image file name"):
        load_dataset(str(tmp_path))


def test_locate_reports_the_files_found(tmp_path):
    clean_token_dataset(tmp_path, text_dir="")

    files = locate(str(tmp_path))

    assert files.layout == "token"
    assert files.captions_uri == str(tmp_path / "Flickr8k.token.txt")
    assert dict(files.split_uris) == {split: str(tmp_path / name) for split, name in SPLIT_FILES.items()}


def test_unknown_layout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        read_captions(str(tmp_path / "x.txt"), "coco")


def test_kaggle_line_beyond_the_csv_field_limit_is_malformed(tmp_path):
    huge = "a.jpg," + "word " * 40000 + "\n"
    make_tree(tmp_path, {**images("Images", "a.jpg"), "captions.txt": "image,caption\na.jpg,Fine .\n" + huge})

    dataset = load_dataset(str(tmp_path))

    assert [r.text for r in dataset.captions] == ["Fine ."]
    assert [(i.reason, i.line) for i in issues_of(dataset, "malformed_line")] == [("malformed_line", 3)]
