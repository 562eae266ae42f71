"""The class mask as one COCO run-length encoding per class: the form annotation tools import
per-class masks in (CVAT's and Label Studio's COCO importers, FiftyOne, pycocotools itself)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask

from prelabel_models.postprocessing import ClassShare


@dataclass(frozen=True)
class ClassSegment:
    class_id: int
    rle_counts: bytes   # COCO's compressed RLE over the mask's [height, width], column-major
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height
    score: float        # mean top-class probability over the segment's pixels


def class_segments(mask: np.ndarray, shares: list[ClassShare]) -> list[ClassSegment]:
    """One segment per class that ``shares`` (the image's summary) finds in ``mask``, in class-id
    order, scored with its mean confidence there.

    COCO runs go down the columns, so each class's indicator is built from the transposed mask:
    its transpose is then already in the column-major order pycocotools reads, and no copy of the
    image per class is made to reorder it."""
    columns_first = np.ascontiguousarray(mask.T)
    segments = []
    for share in shares:
        if share.pixel_fraction == 0:
            continue
        rle = coco_mask.encode((columns_first == share.class_id).view(np.uint8).T)
        x, y, width, height = (int(round(v)) for v in coco_mask.toBbox(rle))
        segments.append(ClassSegment(share.class_id, rle["counts"], int(coco_mask.area(rle)), (x, y, width, height),
                                     share.mean_confidence))
    return segments
