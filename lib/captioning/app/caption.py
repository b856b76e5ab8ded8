"""``captioner caption IMAGE... --model MODEL``: caption image files or S3 objects in this process, no Spark.

    captioner caption photos/dog.jpg s3://photos/2026/beach.png --model s3://my-bucket/models/v1
    captioner caption photos/ --model models/v1 --beams 3
    captioner caption photos/dog.jpg --model models/v1 --json

It uses the CNN, the image decoding and the caption search of caption-images
(:class:`captioning.model.image_captioner.ImageCaptioner`, images read by
:func:`captioning.pipeline.reading.load_image` like the bulk job's tasks read them), so an
image gets the caption caption-images gives it with the same search options.

Output: one line per caption, ``IMAGE<TAB>SCORE<TAB>CAPTION`` (with ``--beams N``, the N
best of each image, best first), or one JSON document with ``--json``. A folder or
prefix stands for the files under it with an image name, as caption-images lists them; a
file named explicitly is decoded whatever its name. An image that cannot be read or
decoded gets one ``error:`` line on stderr with its reason and the others are still
captioned; the exit status is 1 when any image failed, 2 for a problem with the model or
the options (as every command).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

from captioning.data.layout import describe_image_extensions, is_image_name
from captioning.errors import InputError
from captioning.model.captioner import Caption
from captioning.model.image_captioner import ImageCaptioner, ImageCaptionerConfig
from captioning.model.search.config import SearchConfig
from captioning.pipeline.options import add_decode_options, add_model_options, add_search_options, decode_from_args, default, positive_int, search_from_args
from captioning.pipeline.reading import UNREADABLE, load_image
from captioning.pipeline.runner import parse_config, run_main
from captioning.store import storage

LOG = logging.getLogger("caption")
NO_IMAGES = "no_images"  # reason of a folder or prefix holding no image file


@dataclass(frozen=True)
class CaptionCommandConfig:
    images: tuple[str, ...]  # files, s3:// objects, folders or prefixes, as given
    captioner: ImageCaptionerConfig
    as_json: bool = False


@dataclass(frozen=True)
class Answer:
    """What one image got: its captions, best first, or the reason it got none."""

    image: str
    captions: tuple[Caption, ...] = ()
    error: str | None = None  # reason code (captioning.data.images.REASONS, "unreadable", "no_images")
    detail: str | None = None  # one line naming the image and what to do

    def as_dict(self) -> dict:
        if self.error:
            return {"image": self.image, "status": "error", "error": self.error, "error_detail": self.detail}
        captions = [{"caption": c.text, "score": c.score, "log_prob": c.log_prob, "ended": c.ended} for c in self.captions]
        return {"image": self.image, "status": "ok", "captions": captions}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caption", description="Caption image files or s3:// objects in this process (no Spark), as caption-images would.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or s3:// objects; a folder or prefix means the image files under it")
    add_model_options(parser)
    add_search_options(parser)
    parser.add_argument("--beams", type=positive_int, default=default(SearchConfig, "results"), help="show the N best captions of each image with their scores; the search keeps at least N beams (--beam-width is raised to N) (default %(default)s)")
    add_decode_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of IMAGE<TAB>SCORE<TAB>CAPTION lines")
    return parser


def search_with_beams(search: SearchConfig, beams: int) -> SearchConfig:
    """``search`` returning its ``beams`` best captions, its beam widened to hold them."""
    if beams == 1:
        return search
    if search.method == "greedy":
        raise InputError(f"--beams {beams}: greedy search finds one caption per image; use --search beam (the default)")
    return dataclasses.replace(search, beam_width=max(search.beam_width, beams), results=beams)


def config_from_args(args: argparse.Namespace) -> CaptionCommandConfig:
    captioner = ImageCaptionerConfig(
        model_uri=args.model, search=search_with_beams(search_from_args(args), args.beams), backbone_weights=args.backbone_weights, decode=decode_from_args(args)
    )
    return CaptionCommandConfig(images=tuple(args.images), captioner=captioner, as_json=args.json)


def expand(inputs: Sequence[str]) -> Iterator[str | Answer]:
    """Each input as an image URI, a folder or prefix as its image files (sorted), or an
    :class:`Answer` with the reason an input gives no image."""
    for item in inputs:
        try:
            if not storage.isdir(item):
                yield item
                continue
            found = [f.uri for f in storage.list_files(item) if is_image_name(f.uri)]
        except storage.StorageError as error:
            yield Answer(item, error=UNREADABLE, detail=str(error))
            continue
        if not found:
            yield Answer(item, error=NO_IMAGES, detail=f"{item}: no file with an image name ({describe_image_extensions()}) under it; name the files themselves")
        yield from found


def caption_all(captioner: ImageCaptioner, inputs: Sequence[str]) -> Iterator[Answer]:
    """Answers in input order; images are read and captioned ``batch_size`` at a time."""
    pending: list[str | Answer] = []

    def flush() -> Iterator[Answer]:
        loaded = [(item, None) if isinstance(item, Answer) else (item, load_image(item, captioner.input_size, captioner.config.decode)) for item in pending]
        good = [result[0] for _, result in loaded if result is not None and result[0] is not None]
        ranked = iter(captioner.caption(good)) if good else iter(())
        for item, result in loaded:
            if isinstance(item, Answer):
                yield item
            elif result[0] is None:
                reason, message = result[1]
                yield Answer(item, error=reason, detail=message if reason == UNREADABLE else f"{item}: {message}")
            else:
                yield Answer(item, captions=next(ranked))
        pending.clear()

    for item in expand(inputs):
        pending.append(item)
        if len(pending) >= captioner.config.batch_size:
            yield from flush()
    yield from flush()


def text_lines(answer: Answer) -> list[str]:
    """``IMAGE<TAB>SCORE<TAB>CAPTION`` per caption, best first (the page shows the same score text)."""
    return [f"{answer.image}\t{format_score(c.score)}\t{c.text}" for c in answer.captions]


def format_score(score: float) -> str:
    return f"{score:.3f}"


def run(config: CaptionCommandConfig) -> int:
    captioner = ImageCaptioner(config.captioner)
    LOG.info("model %s loaded in %.1f s", config.captioner.model_uri, captioner.load_seconds)
    answers = []
    failed = 0
    for answer in caption_all(captioner, config.images):
        if answer.error:
            failed += 1
            print(f"error: {answer.detail}", file=sys.stderr, flush=True)
        elif not config.as_json:
            print("\n".join(text_lines(answer)), flush=True)
        answers.append(answer)
    if config.as_json:
        search = captioner.search
        document = {
            "model": config.captioner.model_uri,
            "model_id": captioner.info.identity,
            "search": dataclasses.asdict(search),
            "images": [answer.as_dict() for answer in answers],
        }
        print(json.dumps(document, indent=1))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_main(lambda: run(parse_config(parser, config_from_args, argv)))


if __name__ == "__main__":
    raise SystemExit(main())
