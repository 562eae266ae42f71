"""Turns request bytes into an RGB uint8 array, refusing what is corrupt, truncated or too large.

The header is read first (Pillow, lazily) so that a file claiming 100000x100000 pixels is refused
before a single pixel is decoded; the pixels are then decoded with OpenCV.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from prelabel_proto.errors import InvalidInput, ResourceExhausted
from prelabel_server.types import RawPixels

# The pixel limit below is ours and stricter; Pillow's own guard would only get in its way.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = {"PNG", "JPEG", "TIFF", "BMP", "WEBP"}
_JPEG_END = b"\xff\xd9"
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length


@dataclass(frozen=True)
class ImageLimits:
    """What the server accepts: total pixels (the decompression-bomb guard) and the longest side
    (a thin strip within the pixel limit would still pad and tile into far more work)."""

    max_pixels: int
    max_side: int


def _check_size(height: int, width: int, limits: ImageLimits) -> None:
    if height <= 0 or width <= 0:
        raise InvalidInput(f"image is {width}x{height} pixels: it must have at least one pixel")
    if height * width > limits.max_pixels:
        raise ResourceExhausted(
            f"image is {width}x{height} = {height * width} pixels, over the server's limit of {limits.max_pixels} "
            "pixels (setting PRELABEL_MAX_IMAGE_PIXELS): send a smaller image or raise the limit")
    if max(height, width) > limits.max_side:
        raise ResourceExhausted(
            f"image is {width}x{height} pixels; its longer side is over the server's limit of {limits.max_side} "
            "pixels (setting PRELABEL_MAX_IMAGE_SIDE): send a smaller image or raise the limit")


def decoded_bytes(data: bytes) -> int:
    """What ``data`` takes once decoded to 8-bit RGB, from its header alone (0 if it has none that
    Pillow reads): a 150 kB PNG may hold 40 megapixels, 120 MB decoded."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Exception:  # anything malformed is the decoder's to report, with its reason
        return 0
    return width * height * 3


def _probe(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header, and a full structural check (PNG CRCs, truncation).
    Pillow may raise almost anything on a malformed file (an IndexError for a PNG without image
    data), and every such failure means the same to the caller: corrupt."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            format_, (width, height) = header.format or "", header.size
        if format_ == "PNG":
            with Image.open(io.BytesIO(data)) as png:
                png.verify()
    except UnidentifiedImageError:
        if claimed := _claimed_format(data):  # Pillow gives up on a TIFF whose directory is cut short
            raise InvalidInput(f"image starts as a {claimed} but cannot be read ({len(data)} bytes): it is corrupt "
                               "or truncated, or its pixels are not 8- or 16-bit integer grey, RGB or RGBA: "
                               "re-encode it") from None
        raise InvalidInput(f"image bytes ({len(data)} bytes) are not a readable image: send PNG, JPEG, "
                           "TIFF, BMP or WebP with 8- or 16-bit integer grey, RGB or RGBA pixels") from None
    except Exception as exc:
        raise InvalidInput(f"image is corrupt or truncated ({type(exc).__name__}: {exc}): re-encode it") from None
    return format_, width, height


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"BM": "BMP"}


def _claimed_format(data: bytes) -> str:
    """The supported format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for signature, name in _SIGNATURES.items() if data.startswith(signature)), "")


def _check_jpeg_complete(data: bytes) -> None:
    """Refuses a JPEG whose main picture is cut short: some OpenCV versions decode it without error,
    greying what is missing. Its scan must be followed by an end-of-image marker, not necessarily at
    the file's end (multi-picture JPEGs and motion photos append more). The scan is found by walking
    the marker segments from SOI, not by searching for FF DA, since an EXIF thumbnail in APP1 has its
    own scan and end marker."""
    pos = 2  # after SOI, which Pillow has checked
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them with a warning, so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0xD9):
            raise InvalidInput(f"JPEG is corrupt (an image marker at byte {pos} of its header): re-encode it")
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            raise InvalidInput(f"JPEG is corrupt (segment length {length} at byte {pos}): re-encode it")
        if marker == 0xDA:  # start of scan: the entropy-coded data begins after its header
            if data.find(_JPEG_END, pos + 2 + length) < 0:
                raise InvalidInput("JPEG is truncated (no end-of-image marker after its image data): "
                                   "send the whole file")
            return
        pos += 2 + length
    raise InvalidInput("JPEG is truncated (it ends before its image data): send the whole file")


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Encoded bytes → (H, W, 3) uint8 RGB. Grey is replicated, alpha dropped, 16-bit scaled to 8.

    The EXIF orientation is applied, as browsers and image viewers do when they show the picture,
    so that the mask lines up with the image an annotation tool displays."""
    if not data:
        raise InvalidInput("image is empty: set image.encoded to the file's bytes or image.raw to pixels")
    format_, width, height = _probe(data)
    if format_ == "MPO":  # a multi-picture JPEG (phones, cameras): OpenCV decodes its first picture
        format_ = "JPEG"
    if format_ not in SUPPORTED_FORMATS:
        raise InvalidInput(f"image format {format_} is not supported: send one of {sorted(SUPPORTED_FORMATS)}")
    _check_size(height, width, limits)
    if format_ == "JPEG":
        _check_jpeg_complete(data)
    # Without IMREAD_UNCHANGED OpenCV applies the orientation; ANYDEPTH and ANYCOLOR keep 16-bit and grey.
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    # The header's size, or its sides swapped by an orientation that turns the picture a quarter
    # (Pillow reports some formats' sizes turned, others not).
    if pixels is None or pixels.shape[:2] not in ((height, width), (width, height)):
        raise InvalidInput(f"{format_} image could not be decoded: it is corrupt or truncated")
    return _to_rgb8(_to_uint8(pixels), bgr=True)


def raw_image(raw: RawPixels, limits: ImageLimits) -> np.ndarray:
    """A raw uint8 array with its declared shape → (H, W, 3) uint8 RGB."""
    if raw.channels not in (1, 3, 4):
        raise InvalidInput(f"raw image has {raw.channels} channels: use 1 (grey), 3 (RGB) or 4 (RGBA)")
    _check_size(raw.height, raw.width, limits)
    expected = raw.height * raw.width * raw.channels
    if len(raw.data) != expected:
        raise InvalidInput(f"raw image data is {len(raw.data)} bytes but height x width x channels = "
                           f"{raw.height}x{raw.width}x{raw.channels} needs {expected} bytes (uint8, row-major)")
    pixels = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.width, raw.channels)
    return _to_rgb8(pixels, bgr=False)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)
    raise InvalidInput(f"pixel type {pixels.dtype} is not supported: send 8- or 16-bit integer images")


def _to_rgb8(pixels: np.ndarray, bgr: bool) -> np.ndarray:
    if pixels.ndim == 2 or pixels.shape[2] in (1, 2):  # grey, or grey + alpha
        grey = pixels if pixels.ndim == 2 else pixels[:, :, 0]
        return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2RGB)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    if pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(pixels)
    raise InvalidInput(f"image has {pixels.shape[2]} channels: send grey, RGB or RGBA")
