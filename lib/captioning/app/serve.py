"""``captioner serve``: a web page on 127.0.0.1 to try a model on photos and to browse a caption-images output.

    captioner serve --model models/v1                       # upload or drop photos, see and hear captions
    captioner serve --results s3://my-bucket/captions       # search every object captioned so far
    captioner serve --model models/v1 --results out/ --port 8600

The page is a Streamlit app (:mod:`captioning.app.page`), served by Streamlit in this
process, on 127.0.0.1 only, with Streamlit's usage statistics off (nothing leaves the
machine). Before serving, this command checks its inputs, loads the model and runs it
once on a blank image (so the first visitor does not wait for tracing), and reads the
output's answers; it prints how long each took. Every visitor then shares that one model
(:mod:`captioning.app.resources`).

Uploads larger than ``--max-upload-mb`` get a message on the page; Streamlit itself
refuses files over four times that size before they reach the server's memory.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
from dataclasses import dataclass, field, replace

from captioning.app.browse import BrowseConfig
from captioning.app.speech import SpeechConfig, unavailable_reason
from captioning.errors import InputError
from captioning.model.image_captioner import ImageCaptionerConfig
from captioning.model.search.config import SearchConfig
from captioning.pipeline.options import add_decode_options, add_model_options, add_search_options, decode_from_args, default, positive_int, search_from_args
from captioning.pipeline.runner import parse_config, run_main
from captioning.store import storage
from captioning.store.bulk_output import BulkOutput

LOG = logging.getLogger("serve")
HOST = "127.0.0.1"  # the page is for the person at this machine; nothing else may reach it
PAGE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.py")


@dataclass(frozen=True)
class ServeConfig:
    captioner: ImageCaptionerConfig | None = None  # None: no photo captioning, browsing only
    browse: BrowseConfig | None = None  # None: no browsing
    port: int = 8501
    max_upload_mb: int = 20  # larger photos get a message instead of a caption
    speech: SpeechConfig = field(default_factory=SpeechConfig)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve", description="A web page on 127.0.0.1: caption uploaded photos and hear them, and browse a caption-images output.")
    add_model_options(parser, required=False)
    parser.add_argument("--results", default=None, help="a caption-images output (folder or s3:// prefix) to browse and search")
    parser.add_argument("--port", type=positive_int, default=default(ServeConfig, "port"), help="port on 127.0.0.1 (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=default(ServeConfig, "max_upload_mb"), help="largest photo captioned, in MB (default %(default)s)")
    parser.add_argument("--page-size", type=positive_int, default=default(BrowseConfig, "page_size"), help="objects per page when browsing (default %(default)s)")
    parser.add_argument("--voice", default=default(SpeechConfig, "voice"), help="espeak-ng voice that reads captions aloud (default %(default)s)")
    add_search_options(parser)
    add_decode_options(parser)
    return parser


def with_alternatives(search: SearchConfig) -> SearchConfig:
    """The page shows every beam the search kept, best first (greedy search has one caption)."""
    return search if search.method == "greedy" else replace(search, results=search.beam_width)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    if not args.model and not args.results:
        raise InputError("give --model (caption photos on the page), --results (browse a caption-images output), or both")
    captioner = None
    if args.model:
        captioner = ImageCaptionerConfig(model_uri=args.model, search=with_alternatives(search_from_args(args)), backbone_weights=args.backbone_weights, decode=decode_from_args(args))
    browse = BrowseConfig(output_uri=args.results, page_size=args.page_size) if args.results else None
    return ServeConfig(captioner=captioner, browse=browse, port=args.port, max_upload_mb=args.max_upload_mb, speech=SpeechConfig(voice=args.voice))


@functools.lru_cache(maxsize=8)
def config_from_argv(argv: tuple[str, ...]) -> ServeConfig:
    """The config the page script gets from the arguments the server was started with."""
    parser = build_parser()
    parser.add_argument("--verbose", action="store_true")
    return config_from_args(parser.parse_args(list(argv)))


def check_port(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise InputError(f"{HOST}:{port} is in use ({error.strerror}); stop what uses it or pass another --port") from error


def prepare(config: ServeConfig) -> None:
    """Check the inputs and build what every visitor shares, before the first one comes."""
    from captioning.app import resources

    if config.browse:
        output = BulkOutput(config.browse.output_uri)
        if not storage.exists(output.captions):
            raise InputError(f"{config.browse.output_uri}: not a caption-images output (no captions/ folder); run caption-images with --output there first")
        index = resources.answer_index(config.browse)
        print(f"read {index.objects:,} answers of {index.runs} runs from {config.browse.output_uri} in {index.load_seconds:.1f} s", flush=True)
    if config.captioner:
        captioner = resources.image_captioner(config.captioner)
        print(f"model {config.captioner.model_uri} loaded in {captioner.load_seconds:.1f} s, first caption in {captioner.warm_up_seconds:.1f} s", flush=True)
        reason = unavailable_reason(config.speech)
        print(f"read-aloud: {'espeak-ng' if reason is None else reason}", flush=True)


def serve(config: ServeConfig, argv: list[str]) -> int:
    check_port(config.port)
    prepare(config)
    from streamlit.web import bootstrap

    flag_options = {
        "server_address": HOST,
        "server_port": config.port,
        "server_headless": True,  # no browser opened, no e-mail prompt
        "browser_gatherUsageStats": False,  # no usage statistics sent anywhere
        "server_fileWatcherType": "none",  # the page's code does not change while it is served
        "server_maxUploadSize": 4 * config.max_upload_mb,  # MB; the page refuses more than max_upload_mb with a message
        "client_toolbarMode": "minimal",
        "logger_hideWelcomeMessage": True,
    }
    bootstrap.load_config_options(flag_options=flag_options)
    print(f"serving {config.url} (Ctrl+C stops)", flush=True)
    bootstrap.run(PAGE_SCRIPT, False, list(argv), flag_options)
    return 0


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    return run_main(lambda: serve(parse_config(parser, config_from_args, argv), argv))


if __name__ == "__main__":
    raise SystemExit(main())
