"""Image bytes -> fixed-size RGB arrays, with stable reasons when an image cannot be used.

Feature extraction reads millions of user-supplied files, so decoding has to be fast,
predictable and safe:

* Fast: JPEGs are decoded with Pillow's *draft* mode, which lets libjpeg scale by 1/2,
  1/4 or 1/8 inside the DCT. A 4000x3000 photo needed at 224x224 is decoded at 500x375
  instead of at full size; the draft scale is chosen so the decoded image is never
  smaller than what the final resize needs.
* Predictable: the same bytes always give the same array. EXIF orientation is applied
  (phone photos store pixels sideways plus a tag), every Pillow mode ends up as 8-bit
  RGB, and transparent pixels are composited onto white (a transparent PNG logo becomes
  a logo on white, not on black as a naive ``convert("RGB")`` gives).
* Safe: the pixel count is read from the header and checked against
  :attr:`DecodeConfig.max_pixels` before any pixel is decoded, so a tiny file claiming to
  be 100000x100000 is refused without allocating memory. Only common photo formats are
  opened (Pillow can also open formats such as EPS that shell out to other programs).

Every failure is an :class:`ImageDecodeError` with a stable ``reason`` code (the feature
job counts failures per reason and writes them to its report), never a raw Pillow error.
Pillow's own decompression-bomb warning is silenced and its error is reported as
``too_large``, so the one guard users configure is ``max_pixels``; Pillow's hard limit
(twice ``PIL.Image.MAX_IMAGE_PIXELS``) still applies above it. The warning is silenced
with ``warnings.catch_warnings``, which is not thread-safe: with decoding threads the
worst case is one stray Pillow warning in a log, or its ignore filter staying installed.

Pillow and numpy only: Spark workers decoding images need no TensorFlow.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Reason codes, in the order decoding can fail. They appear in job reports: never rename.
EMPTY = "empty"  # zero bytes
NOT_AN_IMAGE = "not_an_image"  # no supported format recognises the bytes
TRUNCATED = "truncated"  # the file ends before the image data does
CORRUPT = "corrupt"  # recognised, but the header or the compressed data is damaged
TOO_LARGE = "too_large"  # the header claims more pixels than DecodeConfig.max_pixels
UNSUPPORTED_FORMAT = "unsupported_format"  # a known image format this installation does not decode (or is not allowed to)
REASONS = (EMPTY, NOT_AN_IMAGE, TRUNCATED, CORRUPT, TOO_LARGE, UNSUPPORTED_FORMAT)

RESIZE_MODES = ("squash", "center_crop")
RESAMPLE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# "JPEG" also opens camera files with several pictures, which Pillow reports as MPO. AVIF
# decodes where Pillow was built with libavif (its wheels are); HEIC needs a plugin Pillow
# does not ship, so such files are answered with unsupported_format.
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "AVIF")
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}

# Leading bytes of the formats above: recognised-but-unreadable files are "corrupt",
# not "not_an_image", so a damaged photo is not mistaken for a stray text file.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# EXIF orientations that swap width and height (the stored pixels are sideways).
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
_DRAFT_FORMATS = ("JPEG", "MPO")  # formats whose decoder can scale while decoding


class ImageDecodeError(ValueError):
    """An image could not be decoded. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown image decode reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable, so the error survives the trip from a Spark worker
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True)
class DecodeConfig:
    """How image bytes become an array. Stored with feature tables so stages agree."""

    max_pixels: int = 90_000_000  # width*height from the header; larger images are refused
    resize: str = "squash"  # "squash": stretch to the target like keras load_img; "center_crop": keep aspect, crop the middle
    resample: str = "bilinear"  # Pillow filter for the final resize (antialiased when shrinking)
    draft: bool = True  # let libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale
    background: tuple[int, int, int] = (255, 255, 255)  # what transparent pixels become
    formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow format names that may be opened

    def __post_init__(self) -> None:
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE_FILTERS)}, got {self.resample!r}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError(f"background must be three values in 0..255, got {self.background!r}")
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))
        object.__setattr__(self, "formats", tuple(f.upper() for f in self.formats))


def decode_image(data: bytes, size: tuple[int, int], config: DecodeConfig = DecodeConfig()) -> np.ndarray:
    """Decode image bytes to an array of shape (height, width, 3), dtype uint8, RGB.

    ``size`` is (width, height), the order Pillow uses. Raises :class:`ImageDecodeError`.
    """
    image = load_rgb(data, size, config)
    image = _resize(image, size, config)
    return np.array(image, dtype=np.uint8)  # (height, width, 3)


def load_rgb(data: bytes, size: tuple[int, int], config: DecodeConfig = DecodeConfig()) -> Image.Image:
    """The upright RGB image before the final resize, decoded at reduced scale if allowed.

    ``size`` is the final (width, height); with draft mode the result is the smallest
    JPEG scale still at least as large as what the resize needs. Exposed so callers
    (and tests) can see the resolution actually decoded.
    """
    width, height = _check_size(size)
    if not data:
        raise ImageDecodeError(EMPTY, "the file has zero bytes; re-upload or remove it from the input listing")
    image = _open(data, config)
    _check_pixels(image, config)
    if config.draft and image.format in _DRAFT_FORMATS:
        _apply_draft(image, (width, height), _orientation(image), config)
    _load(image)
    image = _upright(image, _orientation(image))
    return _to_rgb(image, config.background)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive (width, height), got {size!r}")
    return width, height


def _open(data: bytes, config: DecodeConfig) -> Image.Image:
    """Parse the header only; pixels are decoded later by :func:`_load`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(config.formats))
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(
            TOO_LARGE,
            f"the header claims more pixels than Pillow will ever decode ({error}); "
            "the file is probably malicious or broken: remove it from the input",
        ) from error
    except UnidentifiedImageError as error:
        claimed = _claimed_format(data)
        if claimed in config.formats and _decodable(claimed):
            raise ImageDecodeError(
                CORRUPT,
                f"the file starts like a {claimed} but its header is damaged or cut short; "
                "re-export or re-upload the original",
            ) from error
        if claimed is not None:
            why = "are not accepted" if _decodable(claimed) else "cannot be decoded by this installation"
            raise ImageDecodeError(
                UNSUPPORTED_FORMAT,
                f"{claimed} files {why} (accepted: {', '.join(accepted_formats(config))}); convert it to JPEG or PNG",
            ) from error
        raise ImageDecodeError(
            NOT_AN_IMAGE,
            f"not a recognised image ({len(data)} bytes, starting {data[:8]!r}); "
            f"expected one of {', '.join(config.formats)}: check the file is an image and not e.g. an HTML error page",
        ) from error
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - plugins raise OSError, SyntaxError, struct.error...
        raise _classify(error) from error


def _claimed_format(data: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":  # ISO base media file: the brand says HEIC/HEIF or AVIF
        return _HEIF_BRANDS.get(data[8:12])
    return None


def accepted_formats(config: DecodeConfig = DecodeConfig()) -> tuple[str, ...]:
    """The formats of ``config`` this installation decodes (what a person may upload)."""
    return tuple(name for name in config.formats if _decodable(name))


def _decodable(format_name: str) -> bool:
    """Whether this Pillow has a decoder for the format (AVIF and HEIC depend on how it was built)."""
    Image.init()
    return format_name in Image.OPEN


def _check_pixels(image: Image.Image, config: DecodeConfig) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(CORRUPT, f"the header gives an empty size {width}x{height}; re-export the image")
    if width * height > config.max_pixels:
        raise ImageDecodeError(
            TOO_LARGE,
            f"{width}x{height} = {width * height} pixels is above the limit of {config.max_pixels} "
            "(DecodeConfig.max_pixels, a decompression-bomb guard); downscale the image or raise the limit",
        )


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8 (1 = upright). Damaged EXIF counts as upright.

    Safe before decoding only for JPEG, whose EXIF sits in the header; PNG may keep EXIF
    after the pixel data, and reading it decodes the image (swallowing decode errors).
    """
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if 1 <= int(value) <= 8 else 1
    except Exception:  # noqa: BLE001 - EXIF is metadata; broken EXIF must not lose the photo
        return 1


def _apply_draft(image: Image.Image, size: tuple[int, int], orientation: int, config: DecodeConfig) -> None:
    """Ask the JPEG decoder for the smallest 1/s scale covering what the resize needs.

    The needed size is in displayed (upright) pixels; the decoder works on stored pixels,
    which are sideways for orientations 5-8, so width and height are swapped there.
    """
    stored_width, stored_height = image.size
    upright = (stored_height, stored_width) if orientation in _TRANSPOSED_ORIENTATIONS else (stored_width, stored_height)
    need_width, need_height = _needed_size(upright, size, config.resize)
    if orientation in _TRANSPOSED_ORIENTATIONS:
        need_width, need_height = need_height, need_width
    image.draft("RGB", (need_width, need_height))


def _needed_size(source: tuple[int, int], target: tuple[int, int], mode: str) -> tuple[int, int]:
    """The smallest whole-image size from which ``mode`` can still produce ``target``."""
    if mode == "squash":
        return target
    scale = max(target[0] / source[0], target[1] / source[1])  # center_crop: cover, then crop
    return max(1, math.ceil(source[0] * scale - 1e-6)), max(1, math.ceil(source[1] * scale - 1e-6))


def _load(image: Image.Image) -> None:
    """Decode the pixels. Pillow opens animated GIF/WebP at frame 0, the frame we keep."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as error:  # a GIF frame larger than the canvas
        raise ImageDecodeError(TOO_LARGE, f"an image frame is larger than Pillow allows ({error}); remove the file") from error
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - plugins raise OSError, SyntaxError, zlib.error, struct.error...
        raise _classify(error) from error


def _classify(error: BaseException) -> ImageDecodeError:
    text = str(error)
    if isinstance(error, EOFError) or "truncated" in text.lower():
        return ImageDecodeError(
            TRUNCATED,
            f"the file ends before the image data does ({text}); the download or upload was probably cut off: fetch it again",
        )
    return ImageDecodeError(
        CORRUPT,
        f"the image data is damaged ({type(error).__name__}: {text}); re-export or re-upload the original",
    )


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    if orientation == 1:
        return image  # nothing to turn; skips exif_transpose's copy
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - damaged EXIF: keep the stored orientation
        return image


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency composited onto ``background``."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _wide_to_rgb(image)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")  # P/L/RGB with a transparent colour key become real alpha
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    except ValueError as error:
        raise ImageDecodeError(CORRUPT, f"colour mode {mode} cannot be converted to RGB ({error}); re-export the image as RGB") from error


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale -> 8-bit grey replicated to RGB.

    Pillow's own conversion clips to 0..255, which turns a 16-bit scan white. Values are
    scaled from the range the mode implies: 0..65535 for 16-bit, 0..1 or 0..255 for
    floats that fit those ranges; anything else is stretched from its own min..max.
    """
    values = np.asarray(image, dtype=np.float64)  # (height, width)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif low >= 0 and high <= 1.0 and image.mode == "F":
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)  # (height, width)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")  # (height, width, 3)


def _resize(image: Image.Image, size: tuple[int, int], config: DecodeConfig) -> Image.Image:
    width, height = _check_size(size)
    resample = RESAMPLE_FILTERS[config.resample]
    if config.resize == "squash":
        if image.size == (width, height):
            return image
        return image.resize((width, height), resample)
    return image.resize((width, height), resample, box=_center_box(image.size, (width, height)))


def _center_box(source: tuple[int, int], target: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred region of ``source`` with the aspect ratio of ``target``."""
    source_w, source_h = source
    scale = min(source_w / target[0], source_h / target[1])
    crop_w, crop_h = target[0] * scale, target[1] * scale
    left, top = (source_w - crop_w) / 2, (source_h - crop_h) / 2
    return (left, top, left + crop_w, top + crop_h)
