"""The built-in sample dataset: synthetic pictures in the Flickr8k layout, with captions.

Flickr8k itself cannot be shipped with the code, yet every stage (caption preparation,
feature extraction, training, evaluation) needs a dataset to run on in a demo, in CI and
on a laptop. :func:`generate_sample_dataset` writes one in exactly the real layout
(:mod:`captioning.data.layout`):

* ``Flicker8k_Dataset/<id>.jpg``, with ids shaped like Flickr photo ids,
  ``<digits>_<10 hex characters>``;
* ``Flickr8k.token.txt`` with five ``<id>.jpg#<n><TAB><caption>`` lines per image;
* ``Flickr_8k.trainImages.txt``, ``Flickr_8k.devImages.txt``, ``Flickr_8k.testImages.txt``.

The data has to be *learnable*, otherwise a demo that trains on it proves nothing. So
every image starts as a scene (:mod:`.scene`): a background and one or two groups of
objects, each with a colour, shape, size, count and place. The image is drawn from the
scene (:mod:`.render`), and the five captions are written from the same scene
(:mod:`.wording`). Like real annotators they mostly use the usual words and now and then
a synonym, plural forms and number words, so the captions of one image usually share a
core phrase such as "three big red circles at the top" around which they differ. The
vocabulary is small (about seventy words), so every word clears the usual minimum count
in a 2,000-image dataset. With ``quirks=True`` the text files also carry the real files'
defects (:mod:`.quirks`).

``SampleConfig.difficulty`` chooses the kind of scene (:mod:`.kinds`): the groups above
(the default), two groups and their relation (:mod:`.relations`, harder: captions say
which group is where), or crowded scenes unlike both (:mod:`.crowded`, to see what a
model says about pictures unlike its training data).
"""
from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

from captioning.data.layout import IMAGE_FOLDERS, SPLIT_FILES, SPLITS, TOKEN_FILE
from captioning.data.sample.config import SampleConfig, rng_for
from captioning.data.sample.quirks import (
    _EXTRA_IMAGES,
    QUIRK_IMAGE_WITHOUT_CAPTIONS,
    Quirk,
    split_file_lines,
    text_and_quirks,
    token_file_lines,
)
from captioning.data.sample.render import encode_jpeg, render_scene
from captioning.data.sample.kinds import captions_of, describe
from captioning.data.sample.scene import SampleImage
from captioning.errors import InputError
from captioning.store import storage

IMAGE_FOLDER = IMAGE_FOLDERS[0]  # "Flicker8k_Dataset", sic: the real folder name


def _image_id(seed: int, index: int, attempt: int) -> str:
    rng = rng_for(seed, index, f"id{attempt}")
    return f"{rng.randint(100_000_000, 3_799_999_999)}_{rng.getrandbits(40):010x}.jpg"


def _image_size(rng: random.Random, config: SampleConfig) -> tuple[int, int]:
    width, height = (round(side * (1 + rng.uniform(-config.size_jitter, config.size_jitter))) for side in config.image_size)
    return (height, width) if rng.random() < config.portrait_share else (width, height)



def sample_image(config: SampleConfig, index: int, attempt: int = 0) -> SampleImage:
    """Image ``index`` of the dataset ``config`` describes; ``attempt`` > 0 only on an id clash."""
    rng = rng_for(config.seed, index, "scene")
    width, height = _image_size(rng, config)
    scene = describe(config.difficulty, rng, width, height)
    captions = captions_of(config.difficulty, scene, rng_for(config.seed, index, "captions"))
    return SampleImage(index=index, image_id=_image_id(config.seed, index, attempt), scene=scene, captions=captions)


def plan_images(config: SampleConfig) -> tuple[SampleImage, ...]:
    """Every image to write, in index order: num_images regular ones, then quirk extras."""
    total = config.num_images + (_EXTRA_IMAGES if config.quirks else 0)
    used: set[str] = set()
    images = []
    for index in range(total):
        image = sample_image(config, index)
        attempt = 0
        while image.image_id in used:  # a 1-in-2^40 clash: take the next id of this image's stream
            attempt += 1
            image = SampleImage(index, _image_id(config.seed, index, attempt), image.scene, image.captions)
        used.add(image.image_id)
        images.append(image)
    return tuple(images)



def image_bytes(config: SampleConfig, image: SampleImage) -> bytes:
    """The JPEG file of one planned image; depends only on the config and the image."""
    rendered = render_scene(image.scene, config.noise, (config.seed, image.index, 1))
    return encode_jpeg(rendered, config.jpeg_quality)


@dataclass(frozen=True)
class _RenderJob:
    config: SampleConfig
    images_uri: str
    images: tuple[SampleImage, ...]


def _render_and_write(job: _RenderJob) -> int:
    """Render, encode and write a chunk of images; S3 uploads overlap in threads."""

    def one(image: SampleImage) -> int:
        data = image_bytes(job.config, image)
        storage.write_bytes(storage.join(job.images_uri, image.image_id), data)
        return len(data)

    if storage.is_s3(job.images_uri):
        with ThreadPoolExecutor(max_workers=8) as threads:
            return sum(threads.map(one, job.images))
    return sum(one(image) for image in job.images)


def _chunks(items: Sequence[SampleImage], size: int) -> Iterable[tuple[SampleImage, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def _write_images(config: SampleConfig, images_uri: str, images: Sequence[SampleImage]) -> int:
    """Write every image file; returns the bytes written."""
    workers = config.resolved_workers()
    if workers <= 1 or len(images) < config.pool_threshold:
        return _render_and_write(_RenderJob(config, images_uri, tuple(images)))
    chunk = max(1, min(250, len(images) // (workers * 4)))
    jobs = [_RenderJob(config, images_uri, part) for part in _chunks(images, chunk)]
    workers = min(workers, len(jobs))
    # "spawn": the parent may hold threads (the S3 event loop) that a fork would copy half-way.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_render_and_write, jobs))



def assign_splits(config: SampleConfig) -> dict[str, tuple[int, ...]]:
    """Split -> image indices (ascending): a seeded shuffle cut at the configured shares."""
    order = list(range(config.num_images))
    rng_for(config.seed, -1, "splits").shuffle(order)
    result, start = {}, 0
    for split in SPLITS:
        count = config.split_counts[split]
        result[split] = tuple(sorted(order[start : start + count]))
        start += count
    return result



@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample_dataset` wrote."""

    root: str  # the dataset URI, as given
    images_uri: str  # the Flicker8k_Dataset folder
    token_uri: str  # Flickr8k.token.txt
    split_uris: Mapping[str, str]  # split -> list file URI
    split_counts: Mapping[str, int]  # split -> regular images listed (quirk entries not counted)
    num_images: int  # regular images: in the folder, captioned five times, in one split
    image_files: int  # JPEG files written, quirk extras included
    caption_lines: int  # non-blank lines of the token file, quirk lines included
    image_bytes: int  # total size of the JPEG files
    quirks: tuple[Quirk, ...]  # every defect injected, in file order; empty without quirks

    def quirk_counts(self) -> dict[str, int]:
        """Quirk kind -> number injected (kinds not injected are left out)."""
        counts: dict[str, int] = {}
        for quirk in self.quirks:
            counts[quirk.kind] = counts.get(quirk.kind, 0) + 1
        return counts


def _check_image_folder(images_uri: str, expected: set[str]) -> None:
    """Refuse to mix with another dataset's images: they would be read as part of this one."""
    if not storage.exists(images_uri):
        return
    stale = [f.uri for f in storage.list_files(images_uri) if storage.basename(f.uri) not in expected]
    if stale:
        raise InputError(
            f"{images_uri}: already holds {len(stale)} other files (e.g. {stale[0]}); "
            "write the sample dataset to an empty or new folder"
        )


def generate_sample_dataset(out_uri: str, config: SampleConfig = SampleConfig()) -> SampleSummary:
    """Write the sample dataset at ``out_uri`` (local path, file:// or s3://)."""
    planned = plan_images(config)
    images, extras = planned[: config.num_images], planned[config.num_images :]
    images_uri = storage.join(out_uri, IMAGE_FOLDER)
    written = [*images, *extras[1:2]]  # extras[0] has captions only, extras[2] only a split entry
    _check_image_folder(images_uri, {image.image_id for image in written})
    total_bytes = _write_images(config, images_uri, written)

    quirks: list[Quirk] = []
    if config.quirks:
        quirks.append(Quirk(QUIRK_IMAGE_WITHOUT_CAPTIONS, f"{IMAGE_FOLDER}/{extras[1].image_id}", None, extras[1].image_id))
    token_text, token_quirks = text_and_quirks(TOKEN_FILE, token_file_lines(images, extras, config))
    quirks += token_quirks
    split_uris, split_texts = {}, {}
    for split, indices in assign_splits(config).items():
        lines = split_file_lines(split, [images[i].image_id for i in indices], extras, config)
        split_texts[split], split_quirks = text_and_quirks(SPLIT_FILES[split], lines)
        split_uris[split] = storage.join(out_uri, SPLIT_FILES[split])
        quirks += split_quirks
    for split in SPLITS:
        storage.write_text(split_uris[split], split_texts[split])
    token_uri = storage.join(out_uri, TOKEN_FILE)
    storage.write_text(token_uri, token_text)  # last: a token file means the images are all there

    return SampleSummary(
        root=out_uri,
        images_uri=images_uri,
        token_uri=token_uri,
        split_uris=MappingProxyType(split_uris),
        split_counts=config.split_counts,
        num_images=len(images),
        image_files=len(written),
        caption_lines=sum(1 for line in token_text.splitlines() if line.strip()),
        image_bytes=total_bytes,
        quirks=tuple(quirks),
    )
