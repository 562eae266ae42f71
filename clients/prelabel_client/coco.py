"""A batch job's pre-annotations as one COCO instances file, the format CVAT imports as "COCO 1.0"
and pycocotools and datumaro read. One annotation per class present in an image, its mask as
compressed RLE."""

from __future__ import annotations

import json
import os
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
    """Collects the segments of each image as its result arrives, and writes the file at the end:
    the segments are small beside the masks (a few kB per image), so a job of tens of thousands of
    images holds them in memory."""

    def __init__(self, classes: list[tuple[int, str, tuple[int, int, int]]], images: list[Path],
                 model: str = "") -> None:
        """``images`` are the job's inputs: each image's ``file_name`` is its path relative to their
        common folder (the image root), as importers expect. An absolute path was refused by
        datumaro ("escapes base directory"), and CVAT matches annotations to a task's frames by
        these relative names."""
        self.image_root = image_root(images)
        self._info = {"description": f"prelabel pre-annotations ({model}); file_name is relative to {self.image_root}",
                      "model": model, "image_root": str(self.image_root), "version": "1.0",
                      "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._categories = [{"id": class_id + CATEGORY_ID_OFFSET, "name": name, "supercategory": "",
                             "color": list(color)} for class_id, name, color in classes]
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._file_names: set[str] = set()

    def add(self, image: Path, entry: dict) -> None:
        """Adds ``image`` (one of the job's) with its ``image_entry``; the ids are this file's. A
        file given twice is added once: importers match annotations to frames by ``file_name``, so
        CVAT would have put each of its masks on the frame as many times."""
        file_name = _absolute(image).relative_to(self.image_root).as_posix()
        if file_name in self._file_names:
            return
        self._file_names.add(file_name)
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": file_name, "height": entry["height"],
                             "width": entry["width"]})
        for annotation in entry["annotations"]:
            self._annotations.append({**annotation, "id": len(self._annotations) + 1, "image_id": image_id})

    def document(self) -> dict:
        """The COCO instances document of the images added so far."""
        return {"info": self._info, "licenses": [], "images": self._images, "annotations": self._annotations,
                "categories": self._categories}

    def write(self, path: Path) -> None:
        """Writes the file whole or not at all (OutputWriteError if it cannot be written)."""
        write_whole(path, json.dumps(self.document()).encode())


def image_root(images: list[Path]) -> Path:
    """The folder the job's images are named relative to: their common folder."""
    return Path(os.path.commonpath([_absolute(image).parent for image in images])) if images else Path()


def _absolute(path: Path) -> Path:
    """``path`` made absolute with ``..`` resolved (links are kept: the name is what the user gave)."""
    return Path(os.path.abspath(path))
