"""The sample dataset: Flickr8k layout, determinism, grounded captions, injected quirks."""
from __future__ import annotations

import io
import os
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from captioning.data.layout import SPLITS, SPLIT_FILES, TOKEN_FILE
from captioning.data.sample.config import OBJECT_COLOURS, SALIENCE_MARGIN, SHAPES, SIZES, SampleConfig
from captioning.data.sample.generate import IMAGE_FOLDER, generate_sample_dataset, plan_images
from captioning.data.sample.quirks import QUIRK_BLANK, QUIRK_CRLF, QUIRK_ID_SUFFIX, QUIRK_IMAGE_WITHOUT_CAPTIONS, QUIRK_KINDS, QUIRK_MISSING_IMAGE_CAPTION, QUIRK_SPLIT_MISSING_IMAGE, QUIRK_WHITESPACE
from captioning.data.sample.scene import ObjectGroup
from captioning.data.text import clean_caption
from captioning.data.vocab import build_vocabulary

ID_PATTERN = re.compile(r"^\d{9,10}_[0-9a-f]{10}\.jpg$")
SMALL = SampleConfig(num_images=48, seed=3)


def _token_lines(root) -> list[str]:
    with open(os.path.join(root, TOKEN_FILE), "rb") as handle:
        return handle.read().decode("utf-8").split("\n")[:-1]


def _captions(root) -> dict[str, dict[int, str]]:
    """image id -> caption number -> caption, from a file without quirks."""
    result: dict[str, dict[int, str]] = {}
    for line in _token_lines(root):
        key, caption = line.split("\t")
        image_id, number = key.rsplit("#", 1)
        result.setdefault(image_id, {})[int(number)] = caption
    return result


def _split_ids(root, split: str) -> list[str]:
    with open(os.path.join(root, SPLIT_FILES[split]), encoding="utf-8") as handle:
        return handle.read().splitlines()


def _folder_files(root) -> set[str]:
    return set(os.listdir(os.path.join(root, IMAGE_FOLDER)))


def _all_bytes(root) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, root)] = handle.read()
    return files


def _pixels(root, image_id: str) -> np.ndarray:
    with open(os.path.join(root, IMAGE_FOLDER, image_id), "rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"), dtype=np.int32)  # (height, width, 3)


def _nearest_colour(rgb) -> str:
    return min(OBJECT_COLOURS, key=lambda name: sum((int(a) - b) ** 2 for a, b in zip(rgb, OBJECT_COLOURS[name])))


def _dominant_colour(pixels: np.ndarray) -> str | None:
    """What a look at the picture says: the most common strongly coloured pixel's colour."""
    flat = pixels.reshape(-1, 3)
    chromatic = flat[(flat.max(axis=1) - flat.min(axis=1)) > 70]
    if not len(chromatic):
        return None
    palette = np.array(list(OBJECT_COLOURS.values()))  # (colours, 3)
    nearest = ((chromatic[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    return list(OBJECT_COLOURS)[np.bincount(nearest, minlength=len(palette)).argmax()]


def _colour_words(caption: str) -> list[str]:
    return [token for token in clean_caption(caption) if token in OBJECT_COLOURS]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sample") / "flickr8k")
    return root, generate_sample_dataset(root, SMALL)


def test_writes_the_flickr8k_layout(small):
    root, summary = small
    assert sorted(os.listdir(root)) == sorted([IMAGE_FOLDER, TOKEN_FILE, *SPLIT_FILES.values()])
    assert IMAGE_FOLDER == "Flicker8k_Dataset"
    images = _folder_files(root)
    assert len(images) == summary.num_images == summary.image_files == SMALL.num_images
    assert all(ID_PATTERN.match(name) for name in images)
    assert summary.images_uri == os.path.join(root, "Flicker8k_Dataset")
    assert summary.token_uri == os.path.join(root, "Flickr8k.token.txt")
    assert summary.split_uris["train"] == os.path.join(root, "Flickr_8k.trainImages.txt")
    assert summary.image_bytes == sum(os.path.getsize(os.path.join(summary.images_uri, n)) for n in images)
    sizes = {tuple(_pixels(root, name).shape[1::-1]) for name in images}
    assert len(sizes) > len(images) // 2  # sizes vary like real photos
    assert any(width < height for width, height in sizes) and any(width > height for width, height in sizes)
    assert summary.quirks == () and summary.quirk_counts() == {}


def test_five_distinct_word_only_captions_per_image(small):
    root, summary = small
    captions = _captions(root)
    assert set(captions) == _folder_files(root)
    assert summary.caption_lines == len(_token_lines(root)) == 5 * summary.num_images
    for numbered in captions.values():
        assert sorted(numbered) == [0, 1, 2, 3, 4]
        texts = list(numbered.values())
        assert len({" ".join(clean_caption(t)) for t in texts}) == 5  # five different phrasings
        for text in texts:
            assert not re.search(r"\d", text)
            assert text == text.strip() and len(clean_caption(text)) >= 2


def test_files_match_the_plan(small):
    root, _ = small
    plan = plan_images(SMALL)
    captions = _captions(root)
    assert [image.image_id for image in plan] == list(captions)  # token file in image order
    for image in plan:
        assert tuple(captions[image.image_id][n] for n in range(5)) == image.captions
        assert tuple(_pixels(root, image.image_id).shape[1::-1]) == (image.scene.width, image.scene.height)


def test_same_config_gives_identical_bytes_whatever_the_worker_count(small, tmp_path):
    root, summary = small
    again = str(tmp_path / "again")
    pooled = SampleConfig(num_images=SMALL.num_images, seed=SMALL.seed, workers=2, pool_threshold=0)
    assert generate_sample_dataset(again, pooled).split_counts == summary.split_counts
    assert _all_bytes(again) == _all_bytes(root)


def test_other_seed_gives_other_data(small, tmp_path):
    root, _ = small
    other = str(tmp_path / "other")
    generate_sample_dataset(other, SampleConfig(num_images=SMALL.num_images, seed=SMALL.seed + 1))
    assert not _folder_files(other) & _folder_files(root)
    assert {c for v in _captions(other).values() for c in v.values()} != {c for v in _captions(root).values() for c in v.values()}
    first_a = sorted(_all_bytes(root)[os.path.join(IMAGE_FOLDER, n)] for n in _folder_files(root))
    first_b = sorted(_all_bytes(other)[os.path.join(IMAGE_FOLDER, n)] for n in _folder_files(other))
    assert not set(first_a) & set(first_b)


def test_split_lists_partition_the_images(small, tmp_path):
    root, summary = small
    splits = {split: _split_ids(root, split) for split in SPLITS}
    assert {k: len(v) for k, v in splits.items()} == dict(summary.split_counts) == {"train": 36, "dev": 6, "test": 6}
    listed = [image_id for ids in splits.values() for image_id in ids]
    assert len(listed) == len(set(listed)) and set(listed) == _folder_files(root)

    custom = SampleConfig(num_images=40, train_fraction=0.5, dev_fraction=0.2, test_fraction=0.3)
    summary = generate_sample_dataset(str(tmp_path / "custom"), custom)
    counts = {split: len(_split_ids(str(tmp_path / "custom"), split)) for split in SPLITS}
    assert counts == dict(summary.split_counts) == {"train": 20, "dev": 8, "test": 12}


@pytest.fixture(scope="module")
def plan2000():
    """The scenes and captions of the demo-sized dataset (planned only, nothing rendered)."""
    return plan_images(SampleConfig(num_images=2000))


def test_attributes_are_uniform_and_vocabulary_is_small_and_frequent(plan2000):
    plan = plan2000
    groups = [group for image in plan for group in image.scene.groups]
    for attribute, values in (("colour", OBJECT_COLOURS), ("shape", SHAPES), ("size", SIZES)):
        shares = Counter(getattr(g, attribute) for g in groups)
        assert set(shares) == set(values)
        assert max(shares.values()) / min(shares.values()) < 1.25, (attribute, shares)
    main_colours = Counter(image.scene.main.colour for image in plan)
    assert max(main_colours.values()) / len(plan) < 0.22  # no colour is a safe blind guess
    vocabulary = build_vocabulary([clean_caption(c) for image in plan for c in image.captions], min_count=10)
    assert vocabulary.dropped_words == 0  # every word is seen at least ten times
    assert 40 <= vocabulary.size - 4 <= 80


def test_one_or_two_groups_and_the_main_group_clearly_stands_out(plan2000):
    groups = Counter(len(image.scene.groups) for image in plan2000)
    assert set(groups) == {1, 2} and min(groups.values()) > 0.4 * len(plan2000)
    for image in plan2000:
        main, *others = image.scene.groups
        for other in others:
            assert main.salience >= SALIENCE_MARGIN * other.salience, image.captions
            assert not set(main.cells) & set(other.cells)
    main_sizes = Counter(image.scene.main.size for image in plan2000)
    assert main_sizes["small"] > 0.25 * len(plan2000)  # the margin does not make the main size a safe guess


def _usual_core(group: ObjectGroup) -> list[str]:
    """The main group in the usual words, cleaned: e.g. three big red circles at the top."""
    count = {1: [], 2: ["two"], 3: ["three"]}[group.count]  # "a" is dropped by cleaning
    noun = group.shape + ("s" if group.count > 1 else "")
    side = group.horizontal if group.horizontal in ("left", "right") else None
    end = group.vertical if group.vertical in ("top", "bottom") else None
    if side and end:
        place = ["in", "the", end, side]
    elif side or end:
        place = ["on", "the", side] if side else ["at", "the", end]
    else:
        place = ["in", "the", "middle"]
    return [*count, group.size, group.colour, noun, *place]


def _contains(tokens: list[str], phrase: list[str]) -> bool:
    return any(tokens[k : k + len(phrase)] == phrase for k in range(len(tokens) - len(phrase) + 1))


def test_annotators_favour_the_usual_words_but_phrase_differently(plan2000):
    shared = Counter(sum(_contains(clean_caption(c), _usual_core(image.scene.main)) for c in image.captions) for image in plan2000)
    n = len(plan2000)
    assert sum(v for k, v in shared.items() if k >= 1) > 0.9 * n  # the usual core phrase is common...
    assert sum(v for k, v in shared.items() if k >= 2) > 0.65 * n
    assert shared[5] < 0.1 * n  # ...yet the annotators seldom all word it the same way
    words = Counter(token for image in plan2000 for caption in image.captions for token in clean_caption(caption))
    for usual, rare in (("big", "large"), ("small", "little"), ("circle", "disc"), ("square", "block"), ("two", "pair"), ("background", "backdrop")):
        assert words[usual] > 2 * words[rare] > 0, (usual, words[usual], rare, words[rare])


def test_main_object_pixels_have_the_caption_colour(small):
    root, _ = small
    for image in plan_images(SMALL):
        main = image.scene.main
        pixels = _pixels(root, image.image_id)
        for instance in main.instances:
            x, y = instance.center
            patch = pixels[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3)
            assert _nearest_colour(np.median(patch, axis=0)) == main.colour, image.image_id
        mentioned = [words[0] for words in map(_colour_words, image.captions) if words]
        assert len(mentioned) >= 3
        assert set(mentioned) == {main.colour}, (image.captions, main.colour)


def test_looking_at_the_picture_beats_a_blind_guess(small):
    root, _ = small
    caption_colours, seen_colours = [], []
    for image_id, numbered in _captions(root).items():
        firsts = [words[0] for words in map(_colour_words, numbered.values()) if words]
        caption_colours.append(Counter(firsts).most_common(1)[0][0])
        seen_colours.append(_dominant_colour(_pixels(root, image_id)))
    n = len(caption_colours)
    looking = sum(a == b for a, b in zip(caption_colours, seen_colours)) / n
    blind = Counter(caption_colours).most_common(1)[0][1] / n
    assert looking >= 0.8 and looking - blind >= 0.5, (looking, blind)


def test_place_words_match_where_objects_are(small):
    root, _ = small
    for image in plan_images(SMALL):
        scene = image.scene
        for group in scene.groups:
            xs = [i.center[0] / scene.width for i in group.instances]
            ys = [i.center[1] / scene.height for i in group.instances]
            mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
            assert {"left": mean_x < 0.45, "right": mean_x > 0.55, "center": 0.3 < mean_x < 0.7, None: True}[group.horizontal]
            assert {"top": mean_y < 0.45, "bottom": mean_y > 0.55, "middle": 0.3 < mean_y < 0.7, None: True}[group.vertical]
        placed = {g.horizontal for g in scene.groups} | {g.vertical for g in scene.groups}
        for caption in image.captions:
            for word in {"left", "right", "top", "bottom"} & set(clean_caption(caption)):
                assert word in placed, (caption, placed)


def test_object_sizes_in_pixels_follow_the_size_words():
    radii: dict[tuple[str, str], list[float]] = {}
    shrink = []  # radius in pixels after squashing the image to 224x224
    for image in plan_images(SampleConfig(num_images=300)):
        rows, cols = image.scene.grid
        cell = min(image.scene.width / cols, image.scene.height / rows)
        for group in image.scene.groups:
            radii.setdefault((group.shape, group.size), []).extend(i.radius / cell for i in group.instances)
            shrink += [i.radius * 224 / max(image.scene.width, image.scene.height) for i in group.instances]
    for shape in SHAPES:
        assert max(radii[shape, "small"]) * 1.4 < min(radii[shape, "big"]), shape
    assert min(shrink) > 8  # even a small object stays well over ten pixels across


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    base = tmp_path_factory.mktemp("quirks")
    config = SampleConfig(num_images=40, seed=5, quirks=True)
    clean = SampleConfig(num_images=40, seed=5)
    return (
        str(base / "quirky"),
        generate_sample_dataset(str(base / "quirky"), config),
        str(base / "clean"),
        generate_sample_dataset(str(base / "clean"), clean),
    )


def _raw_lines(root, name: str) -> list[str]:
    """Lines with their CR kept (split on LF only)."""
    with open(os.path.join(root, name), "rb") as handle:
        return handle.read().decode("utf-8").split("\n")[:-1]


def test_quirks_mode_injects_every_documented_quirk(quirky):
    root, summary, _, _ = quirky
    assert set(summary.quirk_counts()) == set(QUIRK_KINDS)
    assert summary.quirk_counts()[QUIRK_ID_SUFFIX] == 5
    assert summary.quirk_counts()[QUIRK_MISSING_IMAGE_CAPTION] == 5
    images = _folder_files(root)
    listed = {line.strip() for split in SPLITS for line in _raw_lines(root, SPLIT_FILES[split])}
    token_text = "\n".join(_raw_lines(root, TOKEN_FILE))
    for quirk in summary.quirks:
        if quirk.line is None:
            assert quirk.kind == QUIRK_IMAGE_WITHOUT_CAPTIONS
            assert quirk.file == f"{IMAGE_FOLDER}/{quirk.image_id}" and quirk.image_id in images
            assert quirk.image_id not in token_text and quirk.image_id not in listed
            continue
        line = _raw_lines(root, quirk.file)[quirk.line - 1]
        if quirk.kind == QUIRK_CRLF:
            assert line.endswith("\r") and line[:-1] == line[:-1].strip()
        elif quirk.kind == QUIRK_BLANK:
            assert line == ""
        elif quirk.kind == QUIRK_WHITESPACE:
            fields = line.split("\t")
            assert "\r" not in line and any(f != f.strip() for f in fields)
        elif quirk.kind == QUIRK_ID_SUFFIX:
            assert line.startswith(quirk.image_id + ".1#") and quirk.image_id in images
        elif quirk.kind == QUIRK_MISSING_IMAGE_CAPTION:
            assert line.startswith(quirk.image_id + "#") and quirk.image_id not in images
        elif quirk.kind == QUIRK_SPLIT_MISSING_IMAGE:
            assert quirk.file in SPLIT_FILES.values()
            assert line == quirk.image_id and quirk.image_id not in images and quirk.image_id not in token_text
        else:
            raise AssertionError(f"unexpected quirk {quirk}")


def test_suffixed_id_repeats_the_numbers_of_the_plain_id(quirky):
    root, summary, _, _ = quirky
    suffixed = [q for q in summary.quirks if q.kind == QUIRK_ID_SUFFIX]
    (image_id,) = {q.image_id for q in suffixed}
    lines = _raw_lines(root, TOKEN_FILE)
    numbers = [lines[q.line - 1].split("\t")[0].rsplit("#", 1)[1] for q in suffixed]
    plain = [line for line in lines if line.strip().startswith(image_id + "#")]
    assert sorted(numbers) == ["0", "1", "2", "3", "4"] and len(plain) == 5


def test_quirks_leave_the_regular_data_untouched(quirky):
    root, summary, clean_root, clean_summary = quirky
    added = {(q.file, q.line) for q in summary.quirks if q.kind not in (QUIRK_CRLF, QUIRK_WHITESPACE)}

    def normalised(line: str) -> str:
        return "\t".join(part.strip() for part in line.strip().split("\t"))

    for name in (TOKEN_FILE, *SPLIT_FILES.values()):
        lines = enumerate(_raw_lines(root, name), start=1)
        regular = [normalised(line) for number, line in lines if (name, number) not in added]
        assert regular == _raw_lines(clean_root, name), name
    extra = {q.image_id for q in summary.quirks if q.kind == QUIRK_IMAGE_WITHOUT_CAPTIONS}
    assert _folder_files(root) == _folder_files(clean_root) | extra
    assert summary.split_counts == clean_summary.split_counts and summary.num_images == clean_summary.num_images
    with open(os.path.join(clean_root, TOKEN_FILE), "rb") as handle:
        clean_bytes = handle.read()
    assert b"\r" not in clean_bytes and b"\n\n" not in clean_bytes and b" \t" not in clean_bytes


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        SampleConfig(train_fraction=0.8, dev_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match="num_images"):
        SampleConfig(num_images=0)
    with pytest.raises(ValueError, match="image_size"):
        SampleConfig(image_size=(32, 32))
    with pytest.raises(ValueError, match="quirks"):
        SampleConfig(num_images=1, quirks=True)


def test_refuses_a_folder_holding_other_images(tmp_path):
    root = str(tmp_path / "data")
    os.makedirs(os.path.join(root, IMAGE_FOLDER))
    open(os.path.join(root, IMAGE_FOLDER, "1000268201_693b08cb0e.jpg"), "wb").close()
    with pytest.raises(ValueError, match="other files"):
        generate_sample_dataset(root, SampleConfig(num_images=4))
    rerun = str(tmp_path / "rerun")
    generate_sample_dataset(rerun, SampleConfig(num_images=4))
    generate_sample_dataset(rerun, SampleConfig(num_images=4))  # same dataset again is fine
