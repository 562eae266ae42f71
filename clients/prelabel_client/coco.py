"""A batch job's pre-annotations as one COCO instances file, the format CVAT imports as "COCO 1.0"
and pycocotools and datumaro read. One annotation per class present in an image, its mask as
compressed RLE."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from prelabel_client.outputs import write_whole
from prelabel_client.results import Prediction

# COCO's category ids start at 1; the mask's class ids start at 0.
CATEGORY_ID_OFFSET = 1


def image_entry(prediction: Prediction) -> dict:
    """One image's part of the file: its size and one annotation per class present (``prediction``
    asked for the "class_segments" output). A batch job also keeps it in the image's own JSON, so a
    resumed job rebuilds the file from what each kept image was given, and nothing else."""
    return {"height": prediction.response.height, "width": prediction.response.width,
            "annotations": [{"category_id": segment.class_id + CATEGORY_ID_OFFSET, "segmentation": segment.rle,
                             "area": segment.area, "bbox": list(segment.box), "iscrowd": 0,
                             "score": round(segment.score, 4)} for segment in prediction.class_segments]}


class CocoFile:
    """Collects the segments of each image as its result arrives, and writes the file at the end.
    Each image's part goes to a spool file on disk as it comes, not into memory: a CamVid frame's
    takes 18 kB as Python objects (measured), so a job of a million images would have held 18 GB.
    Only the file names stay in memory, to list each image once."""

    def __init__(self, classes: list[tuple[int, str, tuple[int, int, int]]], images: list[Path],
                 model: str = "", spool_dir: Path | None = None) -> None:
        """``images`` are the job's inputs: each image's ``file_name`` is its path relative to their
        common folder (the image root), as importers expect. An absolute path was refused by
        datumaro ("escapes base directory"), and CVAT matches annotations to a task's frames by
        these relative names. The spool is an unnamed file in ``spool_dir`` (default: the system's
        temporary folder), gone when this object is."""
        self.image_root = image_root(images)
        self.info = {"description": f"prelabel pre-annotations ({model}); file_name is relative to {self.image_root}",
                     "model": model, "image_root": str(self.image_root), "version": "1.0",
                     "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.categories = [{"id": class_id + CATEGORY_ID_OFFSET, "name": name, "supercategory": "",
                            "color": list(color)} for class_id, name, color in classes]
        self._spool = tempfile.TemporaryFile(dir=spool_dir)
        self._file_names: set[str] = set()
        self._annotations = 0

    def add(self, image: Path, entry: dict, brush_regions: list[dict] | None = None) -> None:
        """Adds ``image`` (one of the job's) with its ``image_entry``; the ids are this file's. A
        file given twice is added once: importers match annotations to frames by ``file_name``, so
        CVAT would have put each of its masks on the frame as many times. ``brush_regions``: the
        same masks as Label Studio regions (``label_studio.brush_regions``), kept for its tasks."""
        file_name = _absolute(image).relative_to(self.image_root).as_posix()
        if file_name in self._file_names:
            return
        self._file_names.add(file_name)
        image_id = len(self._file_names)
        record = {"id": image_id, "file_name": file_name, "height": entry["height"], "width": entry["width"]}
        annotations = [{**annotation, "id": self._annotations + number, "image_id": image_id}
                       for number, annotation in enumerate(entry["annotations"], start=1)]
        self._annotations += len(annotations)
        self._spool.seek(0, os.SEEK_END)
        self._spool.write(json.dumps([record, annotations, brush_regions]).encode() + b"\n")

    def images(self) -> Iterator[tuple[dict, list[dict], list[dict] | None]]:
        """Each image added so far, in order: its COCO ``images`` record, its annotations and its
        Label Studio regions (None if not given)."""
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            record, annotations, brush_regions = json.loads(line)
            yield record, annotations, brush_regions

    def write(self, path: Path) -> None:
        """Writes the COCO instances file of the images added so far, whole or not at all
        (OutputWriteError if it cannot be written), a piece at a time."""
        write_whole(path, self._document_pieces())

    def _document_pieces(self) -> Iterator[bytes]:
        yield b'{"info": ' + json.dumps(self.info).encode() + b', "licenses": [], "images": '
        yield from json_array(record for record, _, _ in self.images())
        yield b', "annotations": '
        yield from json_array(annotation for _, annotations, _ in self.images() for annotation in annotations)
        yield b', "categories": ' + json.dumps(self.categories).encode() + b"}"


def json_array(items: Iterable[object]) -> Iterator[bytes]:
    """A JSON array of ``items``, a piece per item, for files too large to build in memory."""
    separator = b"["
    for item in items:
        yield separator + json.dumps(item).encode()
        separator = b", "
    yield b"[]" if separator == b"[" else b"]"


def image_root(images: list[Path]) -> Path:
    """The folder the job's images are named relative to: their common folder."""
    return Path(os.path.commonpath([_absolute(image).parent for image in images])) if images else Path()


def _absolute(path: Path) -> Path:
    """``path`` made absolute with ``..`` resolved (links are kept: the name is what the user gave)."""
    return Path(os.path.abspath(path))
