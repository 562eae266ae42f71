"""A batch job's pre-annotations as one COCO instances file, the format CVAT imports as "COCO 1.0"
and pycocotools and datumaro read. One annotation per class present in an image, its mask as
compressed RLE."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from prelabel_client.outputs import write_whole
from prelabel_client.results import Prediction

# COCO's category ids start at 1; the mask's class ids start at 0.
CATEGORY_ID_OFFSET = 1


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
        self.image_root = Path(os.path.commonpath([_absolute(image).parent for image in images])) if images else Path()
        self._info = {"description": f"prelabel pre-annotations ({model}); file_name is relative to {self.image_root}",
                      "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "version": "1.0"}
        self._categories = [{"id": class_id + CATEGORY_ID_OFFSET, "name": name, "supercategory": "",
                             "color": list(color)} for class_id, name, color in classes]
        self._images: list[dict] = []
        self._annotations: list[dict] = []

    def add(self, image: Path, prediction: Prediction) -> None:
        """Adds ``image`` (one of the job's) and one annotation per segment of ``prediction``, which
        must have been asked for with the "class_segments" output."""
        image_id = self._add_image(image, prediction.response.height, prediction.response.width)
        for segment in prediction.class_segments:
            self._add_annotation({
                "image_id": image_id, "category_id": segment.class_id + CATEGORY_ID_OFFSET,
                "segmentation": segment.rle, "area": segment.area, "bbox": list(segment.box), "iscrowd": 0,
                "score": round(segment.score, 4)})

    def restore(self, path: Path, images: list[Path]) -> list[Path]:
        """Adds those of ``images`` that a previous run's file at ``path`` holds, with their
        annotations (a resumed job keeps them without asking again); returns them. An unreadable
        or missing file holds none."""
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
            by_name = {entry["file_name"]: entry for entry in previous["images"]}
            annotations = defaultdict(list)
            for annotation in previous["annotations"]:
                annotations[annotation["image_id"]].append(annotation)
        except (OSError, ValueError, KeyError, TypeError):
            return []
        found = []
        for image in images:
            entry = by_name.get(self._file_name(image))
            if entry is not None:
                image_id = self._add_image(image, entry["height"], entry["width"])
                for annotation in annotations[entry["id"]]:
                    self._add_annotation({**annotation, "image_id": image_id})
                found.append(image)
        return found

    def _file_name(self, image: Path) -> str:
        return _absolute(image).relative_to(self.image_root).as_posix()

    def _add_image(self, image: Path, height: int, width: int) -> int:
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": self._file_name(image), "height": height, "width": width})
        return image_id

    def _add_annotation(self, annotation: dict) -> None:
        self._annotations.append({**annotation, "id": len(self._annotations) + 1})

    def write(self, path: Path) -> None:
        """Writes the file whole or not at all (OutputWriteError if it cannot be written)."""
        write_whole(path, json.dumps({"info": self._info, "licenses": [], "images": self._images,
                                      "annotations": self._annotations, "categories": self._categories}).encode())


def _absolute(path: Path) -> Path:
    """``path`` made absolute with ``..`` resolved (links are kept: the name is what the user gave)."""
    return Path(os.path.abspath(path))
