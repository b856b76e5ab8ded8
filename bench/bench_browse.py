"""Browsing a caption-images output of 100,000 objects with ``captioner serve --results``: how fast it opens.

Run (from the repository root, with the project's virtual environment)::

    .venv/bin/python bench/bench_browse.py --objects 100000 --json-out bench-output/browse.json

The output is generated, not captioned (captioning 100,000 images takes hours on two
cores): Parquet part files of 256 rows each in the caption-images layout
(:class:`captioning.store.bulk_output.BulkOutput` names the folders), the way Spark commits
a run, over three runs: the first captions 60% of the objects, the second 35% more and
captions 10,000 of the first run's objects again (changed files), the third the last 5%;
about 3% of the rows are errors and 1% skipped names. Captions are drawn from a small
phrase grammar ("a brown dog runs on the beach"), so a word filter keeps a realistic
fraction. Every object is a real JPEG file (hard links to a few hundred generated
pictures), so the page's thumbnails are real reads and decodes.

Measured in one run, on the same output:

* in process: reading the latest answers of all runs (``latest_answers``), building the
  search index (``AnswerIndex``: the read plus counts), a two-word filter, and the
  thumbnails of one page (cold, then from the cache);
* through the real server and headless Chromium (Playwright driving /usr/bin/chromium):
  ``captioner serve --results`` start until it answers (its start reads the output),
  opening the page until the first page of cards shows its thumbnails, the word filter
  until its cards show, the next page, and the errors view.

Wall-clock times of a single pass each, except the filter (median of 5 in process). Goal
lines: the page opens (server ready, then first page in the browser) within 5 s each.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

ROWS_PER_PART = 256  # what caption-images writes per Spark task (ImageReading.images_per_partition)
PICTURES = 300  # distinct JPEGs behind the objects
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUERY = "dog beach"
COLOURS = ("brown", "black", "white", "grey", "red", "small", "large", "young")
SUBJECTS = ("dog", "cat", "man", "woman", "child", "bird", "horse", "boat", "car", "bicycle")
ACTIONS = ("runs", "sits", "stands", "jumps", "walks", "plays", "rests", "waits")
PLACES = ("on the beach", "in the park", "on the grass", "in the snow", "by the water", "on the street", "in a field", "near a tree")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_browse.py", description="Open, filter and page a generated caption-images output of many objects in `captioner serve --results`.")
    parser.add_argument("--objects", type=int, default=100_000, help="distinct objects in the output (default 100000)")
    parser.add_argument("--page-size", type=int, default=24, help="cards per page (default 24, the server's default)")
    parser.add_argument("--seed", type=int, default=0)
    lib.add_work_options(parser, "the generated output and pictures", master=False)
    return parser


# --------------------------------------------------------------------------- the output


def make_pictures(folder: str, count: int, rng: random.Random) -> list[str]:
    from PIL import Image, ImageDraw

    os.makedirs(folder)
    paths = []
    for number in range(count):
        image = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.randrange(260), rng.randrange(180)
            draw.ellipse((x, y, x + 60, y + 60), fill=tuple(rng.randrange(256) for _ in range(3)))
        path = os.path.join(folder, f"picture-{number:04d}.jpg")
        image.save(path, quality=85)
        paths.append(path)
    return paths


def make_objects(folder: str, pictures: list[str], count: int) -> list[str]:
    """``count`` object files, 1,000 per folder, each a hard link to a picture."""
    uris = []
    for number in range(count):
        sub = os.path.join(folder, f"{number // 1000:04d}")
        if number % 1000 == 0:
            os.makedirs(sub)
        uri = os.path.join(sub, f"photo-{number:06d}.jpg")
        os.link(pictures[number % len(pictures)], uri)
        uris.append(uri)
    return uris


def write_output(output: str, uris: list[str], rng: random.Random) -> dict:
    """Three committed runs over ``uris``; returns counts of what was written."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from captioning.store.bulk_output import BulkOutput

    schema = pa.schema([
        ("uri", pa.string()), ("input", pa.string()), ("version", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
        ("status", pa.string()), ("caption", pa.string()), ("score", pa.float64()), ("error", pa.string()), ("error_detail", pa.string()),
        ("model_id", pa.string()), ("captioned_at", pa.timestamp("us")),
    ])
    total = len(uris)
    first, second = int(total * 0.60), int(total * 0.95)
    runs = [
        ("20260101T020000Z-aaaaaa", uris[:first], "v1"),
        ("20260201T020000Z-bbbbbb", uris[first:second] + uris[: min(10_000, first)], "v2"),
        ("20260301T020000Z-cccccc", uris[second:], "v1"),
    ]
    written = {"rows": 0, "files": 0}
    for run_id, chosen, version in runs:
        folder = BulkOutput(output).run_rows(run_id)
        os.makedirs(folder)
        stamp = dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ")
        rows = []
        for uri in chosen:
            draw = rng.random()
            row = {"uri": uri, "input": os.path.dirname(os.path.dirname(uri)), "version": version, "size": 20_000, "mtime": 1.7e9, "model_id": "resnet50-bench",
                   "captioned_at": stamp, "status": "ok", "caption": None, "score": None, "error": None, "error_detail": None}
            if draw < 0.03:
                row.update(status="error", error="truncated", error_detail="truncated: the file ends before the image data does")
            elif draw < 0.04:
                row.update(status="skipped", error="not_an_image_name", error_detail="the object name has no image extension")
            else:
                row.update(caption=f"a {rng.choice(COLOURS)} {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}", score=-rng.uniform(0.2, 2.0))
            rows.append(row)
        for part, start in enumerate(range(0, len(rows), ROWS_PER_PART)):
            pq.write_table(pa.Table.from_pylist(rows[start : start + ROWS_PER_PART], schema=schema), os.path.join(folder, f"part-{part:05d}-bench.snappy.parquet"))
            written["files"] += 1
        written["rows"] += len(rows)
    return written


# --------------------------------------------------------------------------- measuring


def in_process(output: str, page_size: int) -> dict:
    from captioning.app.browse import AnswerIndex, BrowseConfig
    from captioning.store.bulk_output import BulkOutput, latest_answers

    _, read = lib.timed(lambda: latest_answers(BulkOutput(output)))
    index, built = lib.timed(lambda: AnswerIndex(BrowseConfig(output, page_size=page_size)))
    searches = []
    for _ in range(5):
        selection, seconds = lib.timed(lambda: index.search(QUERY))
        searches.append(seconds)
    rows = selection.page(1).rows
    _, cold = lib.timed(lambda: index.thumbnails(rows))
    _, warm = lib.timed(lambda: index.thumbnails(rows))
    return {"objects": index.objects, "read_latest_answers_s": read, "build_index_s": built, "filter_median_s": statistics.median(searches),
            "filter_matches": selection.total, "page_thumbnails_cold_s": cold, "page_thumbnails_cached_s": warm, "counts": index.counts}


def through_the_page(output: str, page_size: int, workdir: str) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = open(os.path.join(workdir, "serve.log"), "wb")
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "captioning.cli", "serve", "--results", output, "--port", str(port), "--page-size", str(page_size)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}", server) - started
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(os.path.join(workdir, "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
            context.set_default_timeout(120_000)
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}")
            page.wait_for_function(f"document.querySelectorAll('li.cap-card img').length === {page_size}")
            opened = time.perf_counter() - t0
            first = page.locator("li.cap-card p.uri").first.inner_text()
            box = page.get_by_label("Words in the caption")
            t0 = time.perf_counter()
            box.fill(QUERY)
            box.press("Enter")
            page.wait_for_function(f"document.body.innerText.includes('every word of “{QUERY}”') && document.querySelectorAll('li.cap-card img').length > 0")
            filtered = time.perf_counter() - t0
            shown = page.get_by_text(re.compile("captioned objects? with every word")).inner_text()
            first = page.locator("li.cap-card p.uri").first.inner_text()
            t0 = time.perf_counter()
            page.get_by_role("button", name="Next page").click()
            page.wait_for_function(f"document.querySelector('li.cap-card p.uri').textContent !== {first!r} && document.querySelectorAll('li.cap-card img').length > 0")
            next_page = time.perf_counter() - t0
            t0 = time.perf_counter()
            page.get_by_text("Errors and skipped").click()
            page.locator("tr.problem").first.wait_for()
            errors = time.perf_counter() - t0
            context.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    return {"server_ready_s": ready, "page_open_s": opened, "filter_s": filtered, "filter_text": shown, "next_page_s": next_page, "errors_view_s": errors}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server, timeout: float = 600) -> float:
    import urllib.request

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"error: the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return time.perf_counter()
        except OSError:
            time.sleep(0.2)
    raise SystemExit("error: the server did not answer")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lib.setup_environment()
    rng = random.Random(args.seed)
    machine = lib.machine_info(with_tensorflow=False)
    with lib.Workdir(args.workdir, args.keep) as work:
        lib.note(f"generating {args.objects:,} objects and their output in {work.path}")

        def generate() -> dict:
            pictures = make_pictures(work.sub("pictures"), PICTURES, rng)
            return write_output(work.sub("output"), make_objects(work.sub("bucket"), pictures, args.objects), rng)

        written, seconds = lib.timed(generate)
        lib.note(f"  {written['rows']:,} rows in {written['files']:,} Parquet files, generated in {seconds:.1f}s")
        lib.note("in process: read, index, filter, thumbnails")
        local = in_process(work.sub("output"), args.page_size)
        lib.note("through the server and Chromium")
        served = through_the_page(work.sub("output"), args.page_size, work.path)
    machine["load_average_end"] = lib.load_average()
    rows = [
        ("read the latest answers of all runs (pyarrow)", local["read_latest_answers_s"]),
        ("build the browse index (read + counts)", local["build_index_s"]),
        (f"word filter “{QUERY}” ({local['filter_matches']:,} matches), median of 5", local["filter_median_s"]),
        (f"thumbnails of one page of {args.page_size}, cold", local["page_thumbnails_cold_s"]),
        ("the same, cached", local["page_thumbnails_cached_s"]),
        ("server start until it answers (reads the output)", served["server_ready_s"]),
        ("browser: open the page until the first page of thumbnails shows", served["page_open_s"]),
        ("browser: word filter until its cards show", served["filter_s"]),
        ("browser: next page", served["next_page_s"]),
        ("browser: errors view", served["errors_view_s"]),
    ]
    table = [f"{local['objects']:,} objects ({written['rows']:,} rows, {written['files']:,} files, 3 runs); {machine['cpus']} CPUs, load {machine['load_average_1_5_15']} -> {machine['load_average_end']}", ""]
    header = f"{'step':<72} {'seconds':>8}"
    table += [header, "-" * len(header)] + [f"{label:<72} {value:>8.2f}" for label, value in rows]
    table += ["", lib.goal_line("server ready (s)", served["server_ready_s"], "<= 5", served["server_ready_s"] <= 5), lib.goal_line("page open (s)", served["page_open_s"], "<= 5", served["page_open_s"] <= 5)]
    return lib.print_report("\n".join(table), {"machine": machine, "written": written, "in_process": local, "served": served, "objects": args.objects}, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
