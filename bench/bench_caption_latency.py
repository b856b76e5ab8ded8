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
  ``--repeats`` different images, after the first.
* one image through the page: ``captioner serve --model`` in its own process, driven by
  headless Chromium (Playwright, /usr/bin/chromium); each request is a new browser tab
  (a new session) that uploads one image, timed from handing the file to the upload box
  until its caption is shown. The first request is reported apart; the others after it.

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


def in_process(model: str, beam_width: int, images: dict[str, list[str]]) -> dict:
    _, import_s = lib.timed(lambda: __import__("tensorflow"))
    from captioning.model.image_captioner import ImageCaptioner, ImageCaptionerConfig
    from captioning.model.search.config import SearchConfig
    from captioning.store import storage

    captioner = ImageCaptioner(ImageCaptionerConfig(model_uri=model, search=SearchConfig(beam_width=beam_width, results=beam_width)))
    first = captioner.warm_up()
    out = {"import_tensorflow_s": import_s, "build_s": captioner.load_seconds, "first_caption_s": first, "backbone": captioner.encoder.backbone, "per_image": {}}
    for kind, paths in images.items():
        captioner.caption([captioner.decode(storage.read_bytes(paths[0]))])  # first of its size
        times = [lib.timed(lambda p=path: captioner.caption([captioner.decode(storage.read_bytes(p))]))[1] for path in paths[1:]]
        out["per_image"][kind] = times
    return out


def through_the_page(model: str, beam_width: int, images: dict[str, list[str]], workdir: str) -> dict:
    from playwright.sync_api import sync_playwright

    import bench_browse

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
                per_image = {kind: [request(path) for path in (paths[1:] if kind == first_kind else paths)] for kind, paths in images.items()}
                context.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        said = [line.strip() for line in handle if line.startswith("model ")]
    return {"server_ready_s": ready, "first_request_s": first, "per_image": per_image, "server_says": said}


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
    lib.note(f"in process: load, then {args.repeats} images of each kind")
    local = in_process(model, args.beam_width, images)
    lib.note("through the server and Chromium")
    served = through_the_page(model, args.beam_width, images, os.path.abspath(args.workdir))
    machine.update(lib.machine_info(with_tensorflow=True))
    machine["load_average_end"] = lib.load_average()
    lines = [f"model {model} ({local['backbone']}), beam {args.beam_width}; {machine['cpus']} CPUs, GPUs {machine.get('gpus') or 'none'}, load {machine['load_average_1_5_15']} -> {machine['load_average_end']}", ""]
    lines += [
        "model load                                            seconds",
        f"  import TensorFlow                                   {local['import_tensorflow_s']:7.2f}",
        f"  read the model, build {local['backbone']} and the decoder      {local['build_s']:7.2f}",
        f"  first caption (tracing)                             {local['first_caption_s']:7.2f}",
        f"  server start until it answers (all of the above)   {served['server_ready_s']:7.2f}",
        f"  the server's own report: {'; '.join(served['server_says'])}",
        f"  first request through the page                      {served['first_request_s']:7.2f}",
        "",
        f"one image, after the first ({args.repeats} each)     in process median / p90    page median / p90    page / in process",
    ]
    result = {"machine": machine, "model": model, "beam_width": args.beam_width, "in_process": local, "served": served, "summary": {}}
    for kind in images:
        mine, page = local["per_image"][kind], served["per_image"][kind]
        ratio = statistics.median(page) / statistics.median(mine)
        result["summary"][kind] = {"in_process_median_s": statistics.median(mine), "in_process_p90_s": p90(mine), "page_median_s": statistics.median(page), "page_p90_s": p90(page), "ratio": ratio}
        lines.append(f"  {kind:<18}                          {statistics.median(mine):6.2f} / {p90(mine):5.2f}            {statistics.median(page):6.2f} / {p90(page):5.2f}         {ratio:5.2f}")
    return lib.print_report("\n".join(lines), result, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
