"""Folders of real and deliberately broken images for the feature and captioning tests."""
from __future__ import annotations

import io
import os
import shutil
import struct
import zlib

from PIL import Image


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims an enormous image (decompression-bomb shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


BAD_IMAGES = {
    "zero.jpg": (lambda good: b"", "empty"),
    "truncated.jpg": (lambda good: good[: len(good) // 3], "truncated"),
    "text.png": (lambda good: b"this is not an image at all\n" * 20, "not_an_image"),
    "bomb.png": (lambda good: huge_png_header(), "too_large"),
}


def odd_mode_images() -> dict[str, bytes]:
    """Valid images in the modes real buckets contain."""
    base = Image.new("RGB", (90, 70), (200, 40, 40))
    return {
        "cmyk.jpg": encoded(base.convert("CMYK"), "JPEG"),
        "gray16.png": encoded(Image.new("I;16", (60, 40), 30000), "PNG"),
        "palette.gif": encoded(base.convert("P"), "GIF"),
        "rgba.png": encoded(Image.new("RGBA", (50, 50), (0, 0, 255, 128)), "PNG"),
        "upper.JPEG": encoded(base, "JPEG"),
        "gray.webp": encoded(base.convert("L"), "WEBP"),
    }


def make_image_folder(folder: str, sample_images: str, good: int, bad: bool = True, nested: bool = True) -> dict[str, str | None]:
    """Copy ``good`` sample JPEGs, add broken/odd images and a non-image file.

    Returns {relative path: expected error reason or None}; the non-image file is not in it.
    """
    os.makedirs(folder, exist_ok=True)
    expected: dict[str, str | None] = {}
    names = sorted(os.listdir(sample_images))[:good]
    for i, name in enumerate(names):
        relative = os.path.join("nested", name) if nested and i % 3 == 0 else name
        os.makedirs(os.path.dirname(os.path.join(folder, relative)), exist_ok=True)
        shutil.copy(os.path.join(sample_images, name), os.path.join(folder, relative))
        expected[relative] = None
    if bad:
        with open(os.path.join(sample_images, names[0]), "rb") as handle:
            good_bytes = handle.read()
        for name, (make, reason) in BAD_IMAGES.items():
            with open(os.path.join(folder, name), "wb") as out:
                out.write(make(good_bytes))
            expected[name] = reason
        for name, data in odd_mode_images().items():
            with open(os.path.join(folder, name), "wb") as out:
                out.write(data)
            expected[name] = None
        with open(os.path.join(folder, "notes.txt"), "w") as out:
            out.write("not an image\n")
    return expected
