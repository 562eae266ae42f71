"""Every accepted input form (PNG 8/16-bit, grey, RGBA, JPEG, TIFF, BMP, WebP, raw arrays) gives a
mask of the image's size; lossless forms of the same pixels give exactly the same mask."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from prelabel_client import InvalidInput, PreLabelClient
from service_support import NUM_CLASSES, encode


def _png_with_pillow(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _with_pillow(image: Image.Image, format_: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format_, **options)
    return buffer.getvalue()


def _exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """An EXIF APP1 payload whose IFD1 carries a JPEG thumbnail (with its own SOS and EOI markers),
    as cameras write it: big-endian TIFF header, an empty IFD0, then IFD1 pointing at the thumbnail."""
    ifd1 = struct.pack(">H", 3) + b"".join(struct.pack(">HHII", tag, kind, 1, value) for tag, kind, value in (
        (0x0103, 3, 6 << 16),  # Compression = 6 (JPEG), a SHORT left-justified in the value field
        (0x0201, 4, 8 + 6 + 42),  # JPEGInterchangeFormat: the thumbnail's offset, right after IFD1
        (0x0202, 4, len(thumbnail)),  # JPEGInterchangeFormatLength
    )) + struct.pack(">I", 0)
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + struct.pack(">HI", 0, 14) + ifd1 + thumbnail


def _palette(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)


def _with_alpha(image: np.ndarray) -> np.ndarray:
    alpha = np.random.default_rng(0).integers(0, 256, image.shape[:2], dtype=np.uint8)  # alpha is dropped
    return np.dstack([image, alpha])


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


# name -> the image (bytes or array) made from the RGB test image
LOSSLESS_RGB = {
    "png-16-bit": lambda rgb: encode(rgb.astype(np.uint16) * 257),
    "png-rgba": lambda rgb: encode(_with_alpha(rgb)),
    "tiff": lambda rgb: encode(rgb, ".tiff"),
    "bmp": lambda rgb: encode(rgb, ".bmp"),
    "webp-lossless": lambda rgb: encode(rgb, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101),
    "raw-rgb": lambda rgb: rgb,
    "raw-rgba": lambda rgb: _with_alpha(rgb),
}
LOSSLESS_GREY = {
    "png-grey": lambda rgb: encode(_grey(rgb)),
    "png-grey-16-bit": lambda rgb: encode(_grey(rgb).astype(np.uint16) * 257),
    "png-grey-alpha": lambda rgb: _png_with_pillow(Image.fromarray(_with_alpha(_grey(rgb)))),  # mode LA
    "tiff-grey-16-bit": lambda rgb: encode(_grey(rgb).astype(np.uint16) * 257, ".tiff"),
    "raw-grey": lambda rgb: np.ascontiguousarray(_grey(rgb)),
}
LOSSY = {
    "jpeg": lambda rgb: encode(rgb, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90),
    "jpeg-grey": lambda rgb: encode(_grey(rgb), ".jpg"),
    "webp": lambda rgb: encode(rgb, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80),
}


@pytest.fixture(scope="module")
def references(onnx_client: PreLabelClient, small_camvid_rgb: np.ndarray) -> dict[str, np.ndarray]:
    return {"rgb": onnx_client.predict(encode(small_camvid_rgb)).mask,
            "grey": onnx_client.predict(encode(cv2.cvtColor(_grey(small_camvid_rgb), cv2.COLOR_GRAY2RGB))).mask}


@pytest.mark.parametrize("form", LOSSLESS_RGB)
def test_lossless_forms_of_the_rgb_image_give_its_mask(onnx_client: PreLabelClient, small_camvid_rgb: np.ndarray,
                                                       references: dict[str, np.ndarray], form: str) -> None:
    mask = onnx_client.predict(LOSSLESS_RGB[form](small_camvid_rgb)).mask
    np.testing.assert_array_equal(mask, references["rgb"])


@pytest.mark.parametrize("form", LOSSLESS_GREY)
def test_grey_forms_give_the_mask_of_the_grey_image(onnx_client: PreLabelClient, small_camvid_rgb: np.ndarray,
                                                    references: dict[str, np.ndarray], form: str) -> None:
    mask = onnx_client.predict(LOSSLESS_GREY[form](small_camvid_rgb)).mask
    np.testing.assert_array_equal(mask, references["grey"])


@pytest.mark.parametrize("form", LOSSY)
def test_lossy_forms_give_a_mask_of_the_right_size(onnx_client: PreLabelClient, small_camvid_rgb: np.ndarray,
                                                   references: dict[str, np.ndarray], form: str) -> None:
    prediction = onnx_client.predict(LOSSY[form](small_camvid_rgb))
    assert prediction.mask.shape == prediction.uncertainty.shape == (101, 133)
    assert prediction.mask.max() < NUM_CLASSES
    reference = references["grey"] if "grey" in form else references["rgb"]
    assert (prediction.mask == reference).mean() > 0.5  # the same scene, slightly altered pixels


def test_a_palette_png_gives_the_mask_of_its_colours(onnx_client: PreLabelClient, small_camvid_rgb: np.ndarray) -> None:
    palette = _palette(small_camvid_rgb)
    mask = onnx_client.predict(_png_with_pillow(palette)).mask
    np.testing.assert_array_equal(mask, onnx_client.predict(np.asarray(palette.convert("RGB"))).mask)


def test_result_arrays_are_decoded_on_first_read_from_the_response(onnx_client: PreLabelClient,
                                                                   small_camvid_rgb: np.ndarray) -> None:
    prediction = onnx_client.predict(small_camvid_rgb)
    assert "mask" not in vars(prediction) and "uncertainty" not in vars(prediction)  # nothing decoded yet
    with Image.open(io.BytesIO(prediction.response.mask.data)) as written:
        np.testing.assert_array_equal(prediction.mask, np.asarray(written))
    assert prediction.mask is prediction.mask  # decoded once, then kept
    assert prediction.uncertainty.dtype == np.float32 and prediction.uncertainty.shape == prediction.mask.shape


def test_a_multi_picture_jpeg_gives_the_mask_of_its_first_picture(onnx_client: PreLabelClient,
                                                                  small_camvid_rgb: np.ndarray) -> None:
    first, second = Image.fromarray(small_camvid_rgb), Image.fromarray(small_camvid_rgb[::-1].copy())
    mpo = _with_pillow(first, "MPO", save_all=True, append_images=[second])  # MPF APP2 segment, as phones write
    with Image.open(io.BytesIO(mpo)) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    mask = onnx_client.predict(mpo).mask
    np.testing.assert_array_equal(mask, onnx_client.predict(_with_pillow(first, "JPEG")).mask)


def test_a_jpeg_with_data_after_its_end_marker_is_served(onnx_client: PreLabelClient,
                                                         small_camvid_rgb: np.ndarray) -> None:
    jpeg = _with_pillow(Image.fromarray(small_camvid_rgb), "JPEG")
    motion_photo = jpeg + b"\0\0\0\x18ftypmp42" + b"\x01" * 1000  # a motion photo's appended MP4
    mask = onnx_client.predict(motion_photo).mask
    np.testing.assert_array_equal(mask, onnx_client.predict(jpeg).mask)


def test_a_jpeg_cut_in_its_scan_is_refused_despite_its_thumbnails_end_marker(onnx_client: PreLabelClient,
                                                                             small_camvid_rgb: np.ndarray) -> None:
    thumbnail = _with_pillow(Image.fromarray(small_camvid_rgb).resize((32, 24)), "JPEG")
    jpeg = _with_pillow(Image.fromarray(small_camvid_rgb), "JPEG", exif=_exif_with_thumbnail(thumbnail))
    assert onnx_client.predict(jpeg).ok  # whole, it is served
    main_scan = jpeg.rfind(b"\xff\xda")  # the thumbnail's scan comes first, inside APP1
    truncated = jpeg[:(main_scan + len(jpeg)) // 2]
    thumbnail_at = truncated.find(thumbnail)
    assert 0 < thumbnail_at and truncated.find(b"\xff\xda") < truncated.find(b"\xff\xd9") < main_scan
    assert truncated.find(b"\xff\xd9") == thumbnail_at + len(thumbnail) - 2  # only the thumbnail's EOI
    with pytest.raises(InvalidInput, match="truncated .no end-of-image marker"):  # our check, not OpenCV's
        onnx_client.predict(truncated)


@pytest.mark.parametrize("format_", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_the_exif_orientation_is_applied_in_every_format(onnx_client: PreLabelClient, small_camvid_rgb: np.ndarray,
                                                         format_: str, orientation: int) -> None:
    """The mask lines up with the picture as viewers and annotation tools show it. It used to be
    applied for TIFF only: a turned JPEG got the mask of its stored pixels."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 100, "subsampling": 0} if format_ == "JPEG" else {"lossless": True} if format_ == "WEBP" else {}
    data = _with_pillow(Image.fromarray(small_camvid_rgb), format_, exif=exif.tobytes(), **options)
    with Image.open(io.BytesIO(data)) as opened:
        shown = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    mask = onnx_client.predict(data).mask
    assert mask.shape == shown.shape[:2]
    assert (mask == onnx_client.predict(shown).mask).mean() > (0.97 if format_ == "JPEG" else 0.999)
