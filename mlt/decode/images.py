"""Strict reference image decoding: bytes or a path in, ``H x W x 3`` uint8 RGB out.

JPEGs go through simplejpeg (libjpeg-turbo, the same library DALI's CPU decoder uses, so both
give identical pixels); anything simplejpeg refuses (PNG bytes behind a ``.jpg`` name, CMYK or
odd JPEG variants, GIF, BMP, ...) goes through Pillow. Grayscale, palette and CMYK images come
out as RGB; alpha is dropped; EXIF orientation is ignored, as in PASCAL VOC.

Nothing is decoded leniently: a truncated JPEG is an error, never an image padded with grey.
Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its default); this module never
sets it. Every failure is an :class:`~mlt.errors.InputError` naming the file and what was wrong.
"""

from __future__ import annotations

import io
import os
from os import PathLike

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from mlt.errors import InputError

ImageSource = str | PathLike | bytes | bytearray | memoryview | np.ndarray
"""A path to an image file, its encoded bytes, or an already decoded ``H x W x 3`` uint8 array."""

_JPEG_MAGIC = b"\xff\xd8"


def read_image_bytes(path: str | PathLike) -> bytes:
    """Returns the encoded bytes of an image file; InputError when missing, unreadable or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(
            path, None, os.fspath(path), "an existing image file", kind="missing image"
        ) from None
    except OSError as err:
        raise InputError(
            path, None, str(err), "a readable image file", kind="unreadable image"
        ) from None
    if not data:
        raise InputError(path, None, "0 bytes", "a non-empty image file", kind="empty image")
    return data


def load_encoded(source: ImageSource) -> tuple[bytes, str | None]:
    """Returns (encoded bytes, file name or None) of a path or an encoded buffer; InputError if empty."""
    if isinstance(source, str | PathLike):
        return read_image_bytes(source), os.fspath(source)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 1:
            raise InputError(
                None,
                None,
                f"array {source.dtype} {source.shape}",
                "encoded bytes as a 1-D uint8 array",
            )
        data = source.tobytes()
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        raise InputError(
            None,
            None,
            type(source).__name__,
            "a path, bytes, or a uint8 array",
            kind="bad image source",
        )
    if not data:
        raise InputError(None, None, "0 bytes", "non-empty encoded image bytes", kind="empty image")
    return data, None


def _pillow_rgb(data: bytes, name: str | None, jpeg_error: str | None) -> np.ndarray:
    """Returns Pillow's strict RGB decode of ``data``; InputError naming both decoders' complaints."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise InputError(
            name,
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES",
            True,
            "False, so truncated images are errors",
            kind="bad setting",
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(name, None, f"{len(data)} bytes starting {data[:8]!r}", "an image (JPEG, PNG, ...)",
                         kind="not an image") from None  # fmt: skip
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        detail = f"{err}" if jpeg_error is None else f"{jpeg_error} (simplejpeg); {err} (Pillow)"
        kind = (
            "truncated image"
            if "truncat" in detail.lower() or "premature" in detail.lower()
            else "corrupt image"
        )
        raise InputError(name, None, detail, "a complete, decodable image", kind=kind) from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def decode_image(source: ImageSource) -> np.ndarray:
    """Returns the image as a contiguous ``H x W x 3`` uint8 RGB array (arrays pass through checked)."""
    if isinstance(source, np.ndarray) and source.ndim == 3:
        if source.dtype != np.uint8 or source.shape[2] != 3:
            raise InputError(
                None, None, f"array {source.dtype} {source.shape}", "an H x W x 3 uint8 RGB array"
            )
        return np.ascontiguousarray(source)
    data, name = load_encoded(source)
    jpeg_error = None
    if data.startswith(_JPEG_MAGIC):
        try:
            # strict=True turns libjpeg warnings ("Premature end of JPEG file") into errors.
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError as err:
            jpeg_error = str(err)
    return _pillow_rgb(data, name, jpeg_error)


def image_size(source: str | PathLike | bytes) -> tuple[int, int]:
    """Returns ``(height, width)`` from the image header without decoding the pixels."""
    return header_size(*load_encoded(source))


def header_size(data: bytes, name: str | None = None) -> tuple[int, int]:
    """Returns ``(height, width)`` read from encoded ``data``; errors name the file ``name``."""
    if data.startswith(_JPEG_MAGIC):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(height), int(width)
        except ValueError:
            pass  # let Pillow try, and word the error
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except UnidentifiedImageError:
        raise InputError(name, None, f"{len(data)} bytes starting {data[:8]!r}", "an image (JPEG, PNG, ...)",
                         kind="not an image") from None  # fmt: skip
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(
            name, None, str(err), "a readable image header", kind="corrupt image"
        ) from None
    return int(height), int(width)
