"""Writes a prediction as files a person can open: palette mask, colour overlay, uncertainty heat map."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from prelabel_client.results import Prediction
from prelabel_models.image_files import read_image
from prelabel_proto import prelabel_pb2 as pb

OVERLAY_ALPHA = 0.5


def colour_mask(mask: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """(H, W) class ids → (H, W, 3) RGB."""
    lookup = np.zeros((256, 3), np.uint8)
    lookup[: len(palette)] = palette
    return lookup[mask]


def overlay(image_rgb: np.ndarray, mask: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    return cv2.addWeighted(image_rgb, 1 - OVERLAY_ALPHA, colour_mask(mask, palette), OVERLAY_ALPHA, 0)


def heat_map(uncertainty: np.ndarray) -> np.ndarray:
    """[0, 1] → BGR heat map (inferno: dark = sure, yellow = unsure)."""
    return cv2.applyColorMap(np.rint(uncertainty * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)


# Measures whose values stay far below 1 (the default model's mutual information peaks near 0.01,
# its MC variance near 0.04): on the [0, 1] scale their heat maps were black, and in 8 bits they
# kept 4 grey levels. Batch jobs ask for them in 16 bits and scale each heat map to its maximum.
SMALL_RANGE_MEASURES = frozenset({"mutual_information", "mc_variance"})


def heat_map_scale(uncertainty: np.ndarray, measure: str) -> float:
    """The uncertainty shown as yellow: 1, or the image's own maximum for a small-range measure."""
    if measure not in SMALL_RANGE_MEASURES:
        return 1.0
    return float(uncertainty.max()) or 1.0


OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_uncertainty.png", ".json")
"""What ``write_prediction`` appends to an image's output name; no two of them can end alike, so
two images' files can only clash when their output names do."""

OUTPUT_KEYS = ("mask", "overlay", "uncertainty", "summary")
"""The files ``write_prediction`` returns, by key (a batch job's manifest lists them so)."""


class OutputWriteError(OSError):
    """An output file could not be written (a name too long for the file system, a full disk...)."""


# The job's own files in the output folder; no image's outputs may take their names (an image
# named coco.png had its summary overwritten by the job's coco.json).
MANIFEST_FILE, COCO_FILE = "manifest.jsonl", "coco.json"
LABEL_STUDIO_TASKS_FILE, LABEL_STUDIO_CONFIG_FILE = "label_studio.json", "label_studio_config.xml"
JOB_FILES = frozenset(name.casefold() for name in (MANIFEST_FILE, COCO_FILE, LABEL_STUDIO_TASKS_FILE,
                                                    LABEL_STUDIO_CONFIG_FILE))


def output_paths(out_dir: Path, name: str) -> list[Path]:
    return [out_dir / f"{name}{suffix}" for suffix in OUTPUT_SUFFIXES]


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def output_names(images: list[Path], out_dir: Path) -> list[str]:
    """A distinct output name per input, deterministic for a given list of inputs.

    An image's name is its stem when no other input of the job has the same stem (compared
    case-insensitively, as some file systems do); otherwise ``<stem>-<8 hex digits>``, the digits
    being the start of the SHA-1 of the image's path as given (so ``a/img.png`` and ``b/img.png``
    become ``img-…`` and ``img-…`` with different digits). Should a name still clash with another
    one, or should one of its files (``<name>_mask.png``, ``<name>_overlay.png``,
    ``<name>_uncertainty.png``, ``<name>.json``) be one of the job's input files or one of its own
    (JOB_FILES), the input's position is appended (``-2``, ``-3``...): an input file is never
    written over."""
    inputs = {file_id for file_id in map(_file_id, images) if file_id is not None}
    stems = [Path(image).stem for image in images]
    counts = Counter(stem.casefold() for stem in stems)
    taken: set[str] = {stem.casefold() for stem in stems if counts[stem.casefold()] == 1}

    def usable(name: str) -> bool:
        return all(_file_id(path) not in inputs and path.name.casefold() not in JOB_FILES
                   for path in output_paths(out_dir, name))

    names: list[str] = []
    for index, (image, stem) in enumerate(zip(images, stems)):
        if counts[stem.casefold()] == 1 and usable(stem):
            names.append(stem)
            continue
        digest = hashlib.sha1(str(image).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        candidate, attempt = f"{stem}-{digest}", 1
        while candidate.casefold() in taken or not usable(candidate):
            attempt += 1
            candidate = f"{stem}-{digest}-{index + 1}" if attempt == 2 else f"{stem}-{digest}-{index + 1}-{attempt}"
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def _write_image(path: Path, image: np.ndarray) -> None:
    """A PNG encoded by OpenCV and written by Python: ``cv2.imwrite`` crashed the process on a file
    name that is not valid UTF-8 (and said nothing of why a write failed)."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OutputWriteError(f"could not encode {path} as PNG")
    write_whole(path, png.tobytes())


def write_prediction(prediction: Prediction, image_path: Path, out_dir: Path,
                     palette: list[tuple[int, int, int]], *, name: str | None = None,
                     extra: dict | None = None, with_overlay: bool = True) -> dict[str, str]:
    """Writes ``<name>_mask.png`` (the server's palette PNG, class ids as pixel values),
    ``<name>_overlay.png`` (with ``with_overlay``), ``<name>_uncertainty.png`` (if the prediction
    has the uncertainty map) and ``<name>.json`` (``name`` defaults to the image's stem; ``extra``
    goes into the JSON too); returns their paths. A file that cannot
    be written raises OutputWriteError, after removing the files this call had already written;
    an interrupt removes them too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(image_path).stem if name is None else name
    written: dict[str, str] = {}
    try:
        if prediction.mask is not None:
            mask_path = out_dir / f"{stem}_mask.png"
            if prediction.response.mask.format != pb.ARRAY_FORMAT_PNG_UINT8:
                raise ValueError("write_prediction needs the mask requested as png_uint8 (the palette PNG)")
            write_whole(mask_path, prediction.response.mask.data)
            written["mask"] = str(mask_path)
            image = read_image(Path(image_path)) if with_overlay else None
            if image is not None and image.shape[:2] == prediction.mask.shape:
                blended = overlay(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), prediction.mask, palette)
                overlay_path = out_dir / f"{stem}_overlay.png"
                _write_image(overlay_path, cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
                written["overlay"] = str(overlay_path)
        scale = None
        if prediction.uncertainty is not None:
            heat_path = out_dir / f"{stem}_uncertainty.png"
            scale = heat_map_scale(prediction.uncertainty, prediction.summary.measure)
            _write_image(heat_path, heat_map(np.clip(prediction.uncertainty / scale, 0.0, 1.0)))
            written["uncertainty"] = str(heat_path)
        summary_path = out_dir / f"{stem}.json"
        write_whole(summary_path, json.dumps({
            "image": str(image_path), "model": prediction.model, "model_version": prediction.model_version,
            "backend": prediction.backend, "device": prediction.device, "summary": asdict(prediction.summary),
            "timings_ms": prediction.timings_ms, "heat_map_scale": scale, "files": written, **(extra or {})},
            indent=2).encode())
        written["summary"] = str(summary_path)
    except BaseException:  # a failed write or an interrupt: the image leaves no files the manifest disowns
        for path in written.values():
            Path(path).unlink(missing_ok=True)
        raise
    return written


_PARTIAL_SUFFIX = ".partial"


def remove_partial_files(out_dir: Path) -> None:
    """Removes what ``write_whole`` left half written in ``out_dir`` when its process was killed
    (for a large job's COCO file, gigabytes). A job's only: two jobs never share an output folder."""
    for partial in out_dir.glob(f".*{_PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            partial.unlink()


def write_whole(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Writes ``path`` whole or not at all: the data goes to a hidden file beside it, which then
    takes its name. Other tools never see a truncated file under an output name, even after a
    SIGKILL or a power cut in the middle of a write (written in place, a job killed during its
    Label Studio export left a third of the file, which no longer parsed). ``data`` may come in
    pieces, so that a file larger than memory (a million images' COCO file) is never held whole."""
    digest = hashlib.sha1(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    partial = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}{_PARTIAL_SUFFIX}")
    try:
        with partial.open("wb") as file:
            file.writelines([data] if isinstance(data, bytes) else data)
        partial.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # nothing to remove where the folder itself was refused
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputWriteError(f"could not write {path}: {exc.strerror or exc}") from exc
        raise
