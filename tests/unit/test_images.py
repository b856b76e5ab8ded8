"""Image decoding: every Pillow mode to RGB, EXIF orientation, JPEG draft mode, errors.

Images are built in memory with Pillow, so each case states exactly which bytes go in.
No TensorFlow or Spark here: workers decode images without either.
"""
from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from captioning.data.images import (
    REASONS,
    DecodeConfig,
    ImageDecodeError,
    decode_image,
    load_rgb,
)
from captioning.serialization import from_dict, to_dict

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def assert_colour(pixel, expected, tolerance=6):
    assert np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected, dtype=int)).max() <= tolerance, (pixel, expected)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_with_header(width: int, height: int, colour_type: int = 2) -> bytes:
    """A ~60-byte PNG whose valid IHDR claims ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def smooth_photo(width: int, height: int) -> np.ndarray:
    """Gradients and large shapes: JPEG-friendly content where scaled decoding is exact-ish."""
    xs = np.linspace(0, 1, width)[None, :]
    ys = np.linspace(0, 1, height)[:, None]
    image = np.zeros((height, width, 3))  # (height, width, 3)
    image[..., 0] = 255 * xs
    image[..., 1] = 255 * ys
    image[..., 2] = 255 * (0.5 + 0.5 * np.sin(6 * xs) * np.cos(4 * ys))
    return image.astype(np.uint8)


# --- modes -----------------------------------------------------------------------------


def test_rgb_jpeg_shape_dtype_and_size_order():
    data = encode(Image.new("RGB", (64, 48), GREEN), "JPEG")
    array = decode_image(data, (32, 16))
    assert array.shape == (16, 32, 3) and array.dtype == np.uint8
    assert array.flags.c_contiguous and array.flags.writeable
    assert_colour(array[8, 16], GREEN)


@pytest.mark.parametrize(
    "image, fmt, expected",
    [
        (Image.new("L", (8, 8), 100), "PNG", (100, 100, 100)),
        (Image.new("1", (8, 8), 1), "PNG", WHITE),
        (Image.new("1", (8, 8), 0), "BMP", BLACK),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", RED),
        (Image.new("CMYK", (8, 8), (255, 0, 255, 0)), "TIFF", GREEN),
        (Image.new("RGB", (8, 8), BLUE), "BMP", BLUE),
        (Image.new("RGB", (8, 8), BLUE), "WEBP", BLUE),
        (Image.new("RGB", (8, 8), RED).convert("P"), "PNG", RED),
        (Image.new("RGB", (8, 8), RED).convert("P"), "GIF", RED),
    ],
    ids=["L", "1-white", "1-black", "CMYK-jpeg", "CMYK-tiff", "RGB-bmp", "RGB-webp", "P-png", "P-gif"],
)
def test_opaque_modes_become_rgb(image, fmt, expected):
    data = encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    array = decode_image(data, (4, 4))
    assert array.shape == (4, 4, 3) and array.dtype == np.uint8
    assert_colour(array[2, 2], expected, tolerance=10)


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    grey = np.full((8, 8), 32768, dtype=np.uint16)  # half of the 16-bit range
    data = encode(Image.fromarray(grey), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    assert_colour(decode_image(data, (8, 8))[0, 0], (128, 128, 128), tolerance=1)


def test_32_bit_integer_tiff_in_16_bit_range():
    grey = np.full((8, 8), 40000, dtype=np.int32)
    data = encode(Image.fromarray(grey, "I"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert_colour(decode_image(data, (8, 8))[0, 0], (156, 156, 156), tolerance=1)


@pytest.mark.parametrize(
    "values, expected",
    [(np.full((8, 8), 0.5, dtype=np.float32), 128), (np.full((8, 8), 200.0, dtype=np.float32), 200)],
    ids=["unit-range", "byte-range"],
)
def test_float_tiff(values, expected):
    data = encode(Image.fromarray(values, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert_colour(decode_image(data, (8, 8))[0, 0], (expected,) * 3, tolerance=1)


def test_float_outside_known_ranges_is_stretched():
    values = np.zeros((8, 8), dtype=np.float32)
    values[:, 4:] = 1000.0
    array = decode_image(encode(Image.fromarray(values, "F"), "TIFF"), (8, 8), DecodeConfig(resample="nearest"))
    assert_colour(array[0, 0], BLACK, tolerance=0)
    assert_colour(array[0, 7], WHITE, tolerance=0)


def half_transparent_red() -> np.ndarray:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # (height, width, RGBA)
    rgba[:, :4] = (255, 0, 0, 128)  # left half: half-transparent red
    rgba[:, 4:] = (0, 0, 0, 0)  # right half: fully transparent black
    return rgba


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_rgba_is_composited_on_white(fmt):
    data = encode(Image.fromarray(half_transparent_red(), "RGBA"), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    array = decode_image(data, (8, 8), DecodeConfig(resample="nearest"))
    assert_colour(array[0, 7], WHITE, tolerance=0)  # transparent black must not show as black
    assert_colour(array[0, 0], (255, 127, 127), tolerance=2)


def test_la_is_composited_on_white():
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[:, :4] = (0, 255)  # opaque black
    la[:, 4:] = (0, 0)  # transparent black
    array = decode_image(encode(Image.fromarray(la, "LA"), "PNG"), (8, 8), DecodeConfig(resample="nearest"))
    assert_colour(array[0, 0], BLACK, tolerance=0)
    assert_colour(array[0, 7], WHITE, tolerance=0)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index_is_composited_on_white(fmt):
    palette_image = Image.new("P", (8, 8), 0)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # index 0 black, 1 blue
    palette_image.paste(1, (0, 0, 4, 8))
    data = encode(palette_image, fmt, transparency=0)
    array = decode_image(data, (8, 8), DecodeConfig(resample="nearest"))
    assert_colour(array[0, 0], BLUE, tolerance=0)
    assert_colour(array[0, 7], WHITE, tolerance=0)


def test_background_colour_is_configurable():
    data = encode(Image.fromarray(half_transparent_red(), "RGBA"), "PNG")
    array = decode_image(data, (8, 8), DecodeConfig(resample="nearest", background=(0, 0, 0)))
    assert_colour(array[0, 7], BLACK, tolerance=0)


def test_rgb_png_with_transparent_colour_key():
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    image.paste(RED, (0, 0, 4, 8))
    array = decode_image(encode(image, "PNG", transparency=(10, 20, 30)), (8, 8), DecodeConfig(resample="nearest"))
    assert_colour(array[0, 0], RED, tolerance=0)
    assert_colour(array[0, 7], WHITE, tolerance=0)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert_colour(decode_image(data, (4, 4))[1, 1], RED, tolerance=3)


# --- EXIF orientation --------------------------------------------------------------------


def jpeg_with_orientation(orientation: int, width: int, height: int) -> bytes:
    """Blue, with red in the top-left quarter of the *stored* pixels."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def red_corner(array: np.ndarray) -> str:
    height, width, _ = array.shape
    corners = {
        "top-left": array[height // 8, width // 8],
        "top-right": array[height // 8, width - 1 - width // 8],
        "bottom-left": array[height - 1 - height // 8, width // 8],
        "bottom-right": array[height - 1 - height // 8, width - 1 - width // 8],
    }
    red = [name for name, pixel in corners.items() if pixel[0] > 200 and pixel[2] < 60]
    assert len(red) == 1, corners
    return red[0]


@pytest.mark.parametrize(
    "orientation, corner, turned",
    [(1, "top-left", False), (6, "top-right", True), (3, "bottom-right", False), (8, "bottom-left", True)],
)
def test_exif_orientation_turns_the_image(orientation, corner, turned):
    data = jpeg_with_orientation(orientation, 60, 40)
    size = (40, 60) if turned else (60, 40)  # displayed (width, height)
    config = DecodeConfig(draft=False)
    assert load_rgb(data, size, config).size == size
    assert red_corner(decode_image(data, size, config)) == corner


@pytest.mark.parametrize("orientation, corner", [(6, "top-right"), (8, "bottom-left")])
def test_exif_orientation_with_draft_scales_the_right_sides(orientation, corner):
    # Stored 1600x800, displayed 800x1600. A wide target (400x100) needs 400 displayed
    # columns = 400 stored rows: only a scale of 2 keeps that. Ignoring the rotation when
    # asking for the draft would pick 1/4 and leave 200 columns to be stretched.
    data = jpeg_with_orientation(orientation, 1600, 800)
    decoded = load_rgb(data, (400, 100))
    assert decoded.size == (400, 800)
    assert red_corner(decode_image(data, (400, 100))) == corner


# --- draft mode --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return encode(Image.fromarray(smooth_photo(4000, 3000)), "JPEG", quality=90)


def test_draft_decodes_large_jpeg_at_reduced_scale(large_jpeg):
    assert load_rgb(large_jpeg, (224, 224)).size == (500, 375)  # 1/8: still >= 224 both ways
    assert load_rgb(large_jpeg, (224, 224), DecodeConfig(draft=False)).size == (4000, 3000)
    assert load_rgb(large_jpeg, (1024, 1024)).size == (2000, 1500)  # 1/2: 1/4 would give 750 rows


def test_draft_matches_full_decode(large_jpeg):
    fast = decode_image(large_jpeg, (224, 224)).astype(int)
    full = decode_image(large_jpeg, (224, 224), DecodeConfig(draft=False)).astype(int)
    assert fast.shape == full.shape == (224, 224, 3)
    difference = np.abs(fast - full)
    assert difference.mean() < 1.5 and difference.max() <= 12


def test_draft_for_center_crop_keeps_enough_pixels(large_jpeg):
    # 100x200 from 4:3 needs a 267x200 cover: 1/8 (500x375) still covers it.
    assert load_rgb(large_jpeg, (100, 200), DecodeConfig(resize="center_crop")).size == (500, 375)
    assert decode_image(large_jpeg, (100, 200), DecodeConfig(resize="center_crop")).shape == (200, 100, 3)


def test_draft_is_ignored_by_other_formats():
    data = encode(Image.fromarray(smooth_photo(800, 600)), "PNG")
    assert load_rgb(data, (100, 100)).size == (800, 600)


# --- resize modes ------------------------------------------------------------------------


def test_squash_and_center_crop():
    image = Image.new("RGB", (300, 100), RED)  # red | green | red, in thirds
    image.paste(GREEN, (100, 0, 200, 100))
    data = encode(image, "PNG")
    squashed = decode_image(data, (30, 30))
    cropped = decode_image(data, (30, 30), DecodeConfig(resize="center_crop"))
    assert_colour(squashed[15, 1], RED)
    assert_colour(squashed[15, 15], GREEN)
    assert_colour(cropped[15, 1], GREEN)
    assert_colour(cropped[15, 28], GREEN)


# --- errors ------------------------------------------------------------------------------


def expect_error(reason: str, data: bytes, size=(32, 32), config: DecodeConfig = DecodeConfig()) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, size, config)
    assert caught.value.reason == reason, caught.value
    assert str(caught.value).startswith(reason + ": ") and len(caught.value.message) > 30
    return caught.value


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    return encode(Image.fromarray(smooth_photo(400, 300)), "JPEG", quality=90)


@pytest.fixture(scope="module")
def photo_png() -> bytes:
    rng = np.random.default_rng(0)  # noise, so the compressed stream is long
    return encode(Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)), "PNG")


def test_empty():
    error = expect_error("empty", b"")
    assert "zero bytes" in error.message


@pytest.mark.parametrize(
    "data",
    [
        bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
        b"<html><body>403 Forbidden</body></html>",
        encode(Image.new("RGB", (16, 16)), "ICO"),  # a real image, in a format not accepted
    ],
    ids=["random", "html", "ico"],
)
def test_not_an_image(data):
    expect_error("not_an_image", data)


def test_format_outside_the_allowed_list_names_it(photo_png):
    error = expect_error("unsupported_format", photo_png, config=DecodeConfig(formats=("JPEG",)))
    assert "PNG files are not accepted" in error.message


def heif_header(brand: bytes) -> bytes:
    """The start of an ISO base media file (HEIC, AVIF): a ftyp box naming the brand, then junk."""
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"mif1" + b"\x00" * 200


def test_heic_is_an_unsupported_format_not_a_stray_file():
    error = expect_error("unsupported_format", heif_header(b"heic"))
    assert "HEIC files cannot be decoded by this installation" in error.message


def test_tiff_and_avif_photos_decode(photo_jpeg):
    from PIL import features

    photo = Image.open(io.BytesIO(photo_jpeg))
    for fmt in ["TIFF"] + (["AVIF"] if features.check("avif") else []):
        buffer = io.BytesIO()
        photo.save(buffer, format=fmt)
        assert decode_image(buffer.getvalue(), (32, 32)).shape == (32, 32, 3), fmt


def test_truncated_jpeg(photo_jpeg):
    expect_error("truncated", photo_jpeg[: len(photo_jpeg) // 2])


def test_truncated_png(photo_png):
    expect_error("truncated", photo_png[: len(photo_png) // 2])


def test_corrupt_png_with_garbage_in_the_middle(photo_png):
    middle = len(photo_png) // 2
    garbage = bytes(np.random.default_rng(2).integers(0, 256, 512, dtype=np.uint8))
    expect_error("corrupt", photo_png[:middle] + garbage + photo_png[middle + 512 :])


def test_corrupt_png_header_crc(photo_png):
    damaged = bytearray(photo_png)
    damaged[29] ^= 0xFF  # last byte of the IHDR checksum
    error = expect_error("corrupt", bytes(damaged))
    assert "PNG" in error.message


def test_huge_dimensions_in_header_are_refused_before_decoding():
    data = png_with_header(100_000, 100_000)
    assert len(data) < 100
    error = expect_error("too_large", data)
    assert "remove" in error.message


def test_own_pixel_limit_checked_from_header(photo_jpeg):
    error = expect_error("too_large", photo_jpeg, config=DecodeConfig(max_pixels=400 * 300 - 1))
    assert "400x300" in error.message and "max_pixels" in error.message
    assert decode_image(photo_jpeg, (32, 32), DecodeConfig(max_pixels=400 * 300)).shape == (32, 32, 3)


def test_pillow_bomb_warning_does_not_leak():
    # 10000x9000 is above Pillow's warning threshold (~89.5M) but within our 90M default:
    # the header passes our guard, then the (missing) pixel data is reported as truncated.
    data = png_with_header(10_000, 9_000, colour_type=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expect_error("truncated", data)


def test_error_is_picklable_and_reasons_are_stable():
    assert REASONS == ("empty", "not_an_image", "truncated", "corrupt", "too_large", "unsupported_format")
    error = pickle.loads(pickle.dumps(ImageDecodeError("corrupt", "bad data")))
    assert (error.reason, error.message, str(error)) == ("corrupt", "bad data", "corrupt: bad data")
    with pytest.raises(ValueError, match="unknown image decode reason"):
        ImageDecodeError("bad", "x")


# --- names and config --------------------------------------------------------------------


def test_is_image_name():
    from captioning.data.layout import IMAGE_EXTENSIONS, is_image_name

    assert set(IMAGE_EXTENSIONS) == {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "heic", "heif"}
    for name in ["a.jpg", "B.JPEG", "s3://bucket/x/y.Png", "c.webp", "d.bmp", "e.GIF", "/tmp/dir.v2/f.jpg", "scan.TIF", "g.tiff", "phone.HEIC", "h.avif"]:
        assert is_image_name(name), name
    for name in ["a.txt", "jpg", "a.jpg.txt", "s3://bucket/images.jpg/", "noext", "a.psd", ".jpg/x"]:
        assert not is_image_name(name), name


def test_config_validation_and_round_trip():
    config = DecodeConfig(max_pixels=1000, resize="center_crop", draft=False, background=(0, 0, 0))
    assert from_dict(DecodeConfig, to_dict(config)) == config
    for bad in [{"resize": "stretch"}, {"max_pixels": 0}, {"resample": "cubic"}, {"background": (0, 0)}]:
        with pytest.raises(ValueError):
            DecodeConfig(**bad)
    with pytest.raises(ValueError, match="unknown DecodeConfig settings"):
        from_dict(DecodeConfig, {"size": 3})
    with pytest.raises(ValueError, match="target size"):
        decode_image(b"x", (0, 10))


def test_module_does_not_import_tensorflow():
    code = "import sys, captioning.data.images; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
