"""A batch job's pre-annotations as one COCO instances file: what CVAT ("COCO 1.0" import), Label
Studio's COCO converter, FiftyOne and pycocotools read. One annotation per class present in an
image, its mask as compressed RLE."""

from __future__ import annotations

import json
from pathlib import Path

from prelabel_client.outputs import write_whole
from prelabel_client.results import Prediction

# COCO's category ids start at 1; the mask's class ids start at 0.
CATEGORY_ID_OFFSET = 1


class CocoFile:
    """Collects the segments of each image as its result arrives, and writes the file at the end:
    the segments are small beside the masks (a few kB per image), so a job of tens of thousands of
    images holds them in memory."""

    def __init__(self, classes: list[tuple[int, str, tuple[int, int, int]]]) -> None:
        self._categories = [{"id": class_id + CATEGORY_ID_OFFSET, "name": name, "supercategory": "",
                             "color": list(color)} for class_id, name, color in classes]
        self._images: list[dict] = []
        self._annotations: list[dict] = []

    def add(self, image: Path, prediction: Prediction) -> None:
        """Adds ``image`` (named as given) and one annotation per segment of ``prediction``, which
        must have been asked for with the "class_segments" output."""
        image_id = len(self._images) + 1
        height, width = prediction.response.height, prediction.response.width
        self._images.append({"id": image_id, "file_name": str(image), "height": height, "width": width})
        for segment in prediction.class_segments:
            self._annotations.append({
                "id": len(self._annotations) + 1, "image_id": image_id,
                "category_id": segment.class_id + CATEGORY_ID_OFFSET, "segmentation": segment.rle,
                "area": segment.area, "bbox": list(segment.box), "iscrowd": 0, "score": round(segment.score, 4)})

    def write(self, path: Path) -> None:
        """Writes the file whole or not at all (OutputWriteError if it cannot be written)."""
        write_whole(path, json.dumps({"images": self._images, "annotations": self._annotations,
                                      "categories": self._categories}).encode())
