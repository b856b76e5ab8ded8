"""Latency of one photo on the web page: from upload to caption, and the model's load time, side by side.

Run (from the repository root, with the project's virtual environment)::

    # a trained ResNet50 model directory (e.g. the one of `make demo`):
    .venv/bin/python bench/bench_caption_latency.py --model demo-output/model --json-out bench-output/latency.json

    # no model at hand: a small one is trained first (sample data, Spark, one epoch; not timed)
    .venv/bin/python bench/bench_caption_latency.py

What is measured, in one run, with the same model (its CNN must be ResNet50 for the
numbers of docs/benchmarks.md) and beam search of width ``--beam-width`` (3):

* model load, in this process: importing TensorFlow; building the captioner
  (:class:`captioning.model.image_captioner.ImageCaptioner`: reading the model directory,
  building ResNet50 and the decoder); the first caption (tracing the compiled CNN and
  search functions). The server does the same before it serves; its own report of both
  is printed too.
* one image in process (the ceiling): read the file, decode it, CNN, beam search;
* one image through the page: ``captioner serve --model`` in its own process, driven by
  headless Chromium (Playwright, /usr/bin/chromium); each request is a new browser tab
  (a new session) that uploads one image, timed from handing the file to the upload box
  until its caption is shown; the server's own time for the same work (read, decode,
  caption) is taken from its log. The first request is reported apart.

``--repeats`` different images of each kind, each captioned in process and then through
the page, one after the other, so that both see the same machine (on a shared machine
the load changes from minute to minute).

Two kinds of images: the sample dataset's 320x240 JPEGs and generated 12-megapixel
JPEGs (4000x3000, the size of a phone photo), which cost more to upload and decode.
Median and 90th percentile of the repeats; the ratio page/in-process is the cost of the
page (upload, Streamlit's rerun, rendering) on top of captioning.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPLOAD = '[data-testid="stFileUploaderDropzoneInput"]'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_caption_latency.py", description="Upload-to-caption latency of `captioner serve` for one image, next to the same work in process, and the model load time.")
    parser.add_argument("--model", default=None, help="trained model directory; default: train a small ResNet50 one under --workdir")
    parser.add_argument("--beam-width", type=int, default=3, help="beam width (default 3)")
    parser.add_argument("--repeats", type=int, default=8, help="timed requests of each kind, after the first (default 8)")
    small = parser.add_argument_group("the small model trained when no --model is given")
    small.add_argument("--workdir", default="bench-output/latency", help="folder for the sample, features, model and images (default bench-output/latency)")
    small.add_argument("--train-images", type=int, default=200, help="size of the generated sample dataset (default 200)")
    small.add_argument("--train-epochs", type=int, default=1, help="training epochs (default 1)")
    small.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=None, help="also write the results as JSON to this file")
    return parser


def train_small_model(args: argparse.Namespace) -> str:
    """The small model of bench_decoding.py (ResNet50 features, random seeded weights): speed does not depend on training."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_decoding import train_small_model as train

    return train(argparse.Namespace(workdir=args.workdir, dataset=None, train_images=args.train_images, train_epochs=args.train_epochs, features_backbone="resnet50", seed=args.seed))


def image_sets(args: argparse.Namespace, count: int) -> dict[str, list[str]]:
    """{"320x240 sample": paths, "4000x3000 photo": paths}, ``count`` each."""
    from PIL import Image, ImageDraw

    sample = os.path.join(os.path.abspath(args.workdir), "sample")
    paths = lib.source_images(sample if os.path.isdir(sample) else None, count, args.workdir, args.seed)
    folder = os.path.join(os.path.abspath(args.workdir), "photos")
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(args.seed)
    photos = []
    for number in range(count):
        path = os.path.join(folder, f"photo-{number:02d}.jpg")
        if not os.path.exists(path):
            image = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
            draw = ImageDraw.Draw(image)
            for _ in range(12):
                x, y = rng.randrange(3600), rng.randrange(2600)
                draw.rectangle((x, y, x + 400, y + 400), fill=tuple(rng.randrange(256) for _ in range(3)))
            image.save(path, quality=90)
        photos.append(path)
    return {"320x240 sample": paths, "4000x3000 photo": photos}


def load_model(model: str, beam_width: int):
    """(captioner, timings): TensorFlow import, build, first caption, all in this process."""
    _, import_s = lib.timed(lambda: __import__("tensorflow"))
    from captioning.model.image_captioner import ImageCaptioner, ImageCaptionerConfig
    from captioning.model.search.config import SearchConfig

    captioner = ImageCaptioner(ImageCaptionerConfig(model_uri=model, search=SearchConfig(beam_width=beam_width, results=beam_width)))
    first = captioner.warm_up()
    return captioner, {"import_tensorflow_s": import_s, "build_s": captioner.load_seconds, "first_caption_s": first, "backbone": captioner.encoder.backbone}


def side_by_side(captioner, model: str, beam_width: int, images: dict[str, list[str]], workdir: str) -> dict:
    """Each image captioned in this process, then uploaded to the page, one after the other,
    so both see the same machine; the server's own compute time is read from its log."""
    from playwright.sync_api import sync_playwright

    import bench_browse
    from captioning.store import storage

    def in_process(path: str) -> float:
        return lib.timed(lambda: captioner.caption([captioner.decode(storage.read_bytes(path))]))[1]

    port = bench_browse.free_port()
    log_path = os.path.join(workdir, "serve.log")
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "captioning.cli", "serve", "--model", model, "--beam-width", str(beam_width), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ready = bench_browse.wait_ready(f"http://127.0.0.1:{port}", server) - started
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(os.path.join(workdir, "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
                context.set_default_timeout(300_000)

                def request(path: str) -> float:
                    page = context.new_page()
                    page.goto(f"http://127.0.0.1:{port}")
                    page.wait_for_selector(UPLOAD, state="attached")
                    t0 = time.perf_counter()
                    page.set_input_files(UPLOAD, [path])
                    page.locator(".st-key-photo-0 .cap-best").wait_for()
                    seconds = time.perf_counter() - t0
                    page.close()
                    return seconds

                first_kind = next(iter(images))
                first = request(images[first_kind][0])
                mine: dict[str, list[float]] = {}
                page: dict[str, list[float]] = {}
                for kind, paths in images.items():
                    in_process(paths[0])  # the first of its size in this process too
                    for path in paths[1:]:
                        mine.setdefault(kind, []).append(in_process(path))
                        page.setdefault(kind, []).append(request(path))
                context.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    said = [line.strip() for line in lines if line.startswith("model ")]
    computed = [float(line.rsplit(" captioned in ", 1)[1].split()[0]) for line in lines if " captioned in " in line]
    server_side = {}
    position = 1  # after the first request
    for kind in images:
        server_side[kind] = computed[position : position + len(page[kind])]
        position += len(page[kind])
    return {"server_ready_s": ready, "first_request_s": first, "in_process": mine, "page": page, "server_side": server_side, "server_says": said}


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lib.setup_environment()
    os.makedirs(args.workdir, exist_ok=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    model = args.model or train_small_model(args)
    images = image_sets(args, args.repeats + 1)
    machine = lib.machine_info(with_tensorflow=False)
    lib.note("model load in this process")
    captioner, load = load_model(model, args.beam_width)
    lib.note(f"{args.repeats} images of each kind, in this process and through the server and Chromium, alternately")
    measured = side_by_side(captioner, model, args.beam_width, images, os.path.abspath(args.workdir))
    machine.update(lib.machine_info(with_tensorflow=True))
    machine["load_average_end"] = lib.load_average()
    lines = [f"model {model} ({load['backbone']}), beam {args.beam_width}; {machine['cpus']} CPUs, GPUs {machine.get('gpus') or 'none'}, load {machine['load_average_1_5_15']} -> {machine['load_average_end']}", ""]
    lines += [
        "model load                                              seconds",
        f"  import TensorFlow                                     {load['import_tensorflow_s']:7.2f}",
        f"  read the model, build {load['backbone']} and the decoder      {load['build_s']:7.2f}",
        f"  first caption (tracing the compiled functions)        {load['first_caption_s']:7.2f}",
        f"  server start until it answers (all of the above)     {measured['server_ready_s']:7.2f}",
        f"  the server's own report: {'; '.join(measured['server_says'])}",
        f"  first request through the page                        {measured['first_request_s']:7.2f}",
        "",
        f"one image, after the first ({args.repeats} each; median / p90 s)   in process     server's compute    upload to caption   page / in process",
    ]
    result = {"machine": machine, "model": model, "beam_width": args.beam_width, "load": load, "measured": measured, "summary": {}}
    for kind in images:
        mine, server_side, page = measured["in_process"][kind], measured["server_side"][kind], measured["page"][kind]
        ratio = statistics.median(page) / statistics.median(mine)
        result["summary"][kind] = {
            "in_process_median_s": statistics.median(mine), "in_process_p90_s": p90(mine), "server_compute_median_s": statistics.median(server_side) if server_side else None,
            "page_median_s": statistics.median(page), "page_p90_s": p90(page), "ratio": ratio,
        }
        compute = f"{statistics.median(server_side):5.2f} / {p90(server_side):5.2f}" if server_side else "    -"
        lines.append(f"  {kind:<18}                                   {statistics.median(mine):5.2f} / {p90(mine):5.2f}   {compute}       {statistics.median(page):5.2f} / {p90(page):5.2f}      {ratio:6.2f}")
    return lib.print_report("\n".join(lines), result, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
