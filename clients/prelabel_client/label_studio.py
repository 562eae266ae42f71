"""A batch job's pre-annotations as Label Studio tasks, each with a prediction of one "brushlabels"
region per class present, and the labelling config those regions belong to. Label Studio cannot
import COCO RLE masks, only its own brush RLE, which ``label-studio-converter`` writes (the extra
``prelabel[label-studio]``; the newer label-studio-sdk holds the same code but pins OpenCV 4.12).

The tasks are made from the job's COCO file (``coco.CocoFile``), so both files always hold the
same masks, and a resumed job rebuilds both from the images it kept."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np

from prelabel_client.coco import CATEGORY_ID_OFFSET, CocoFile, json_array
from prelabel_client.outputs import LABEL_STUDIO_CONFIG_FILE, LABEL_STUDIO_TASKS_FILE, write_whole

# Label Studio serves a file at this address when LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is the image
# root's parent and a local files storage is on the image root: it refuses a storage on the
# document root itself, so ``?d=`` must start with a folder below it.
DEFAULT_IMAGE_URL = "/data/local-files/?d={root}/{path}"
# The names Label Studio's own semantic segmentation template gives its tags.
BRUSH_TAG, IMAGE_TAG = "tag", "image"


class LabelStudioError(ValueError):
    """Label Studio tasks cannot be written as asked; the message says what to change."""


def check_ready(image_url: str, root: Path) -> None:
    """Fails before a job sends its first image rather than after its last: on an ``image_url``
    without ``{path}``, or with ``{root}`` for images whose common folder is ``/`` (LabelStudioError),
    or without the extra installed (ModuleNotFoundError)."""
    check_image_url(image_url)
    if "{root}" in image_url and root.parent == root:
        raise LabelStudioError(f"the images' common folder is {root}, which has no name for {{root}} in the image "
                               f"URL {image_url!r}: give the images from one folder, or an --image-url without "
                               "{root}")
    import label_studio_converter.brush  # noqa: F401


def check_image_url(image_url: str) -> None:
    if "{path}" not in image_url:
        raise LabelStudioError(f"the image URL {image_url!r} must hold {{path}}, where each image's relative path goes "
                         f"(e.g. {DEFAULT_IMAGE_URL!r} or 'https://example.com/images/{{path}}')")


def write_label_studio(coco: CocoFile, out_dir: Path, image_url: str = DEFAULT_IMAGE_URL) -> tuple[Path, Path]:
    """Writes ``label_studio.json`` (tasks to import) and ``label_studio_config.xml`` (the project's
    labelling interface) into ``out_dir`` from ``coco``'s images and their brush regions; returns
    their paths. ``image_url`` turns an image's
    path relative to the job's image root (COCO's ``file_name``) into what Label Studio loads:
    ``{path}`` is replaced by that path and ``{root}`` by the image root's own name, URL-quoted."""
    tasks_path, config_path = out_dir / LABEL_STUDIO_TASKS_FILE, out_dir / LABEL_STUDIO_CONFIG_FILE
    write_whole(tasks_path, json_array(tasks(coco, image_url)))
    write_whole(config_path, labeling_config(coco.categories).encode())
    return tasks_path, config_path


def tasks(coco: CocoFile, image_url: str = DEFAULT_IMAGE_URL) -> Iterator[dict]:
    """One task per image of ``coco``, its prediction scored by the image's mean confidence (so
    Label Studio can sort the least sure first); made one at a time, as they are written."""
    model_version = coco.info.get("model", "")
    image_url = image_url.replace("{root}", _quoted(Path(coco.info["image_root"]).name))
    for image, annotations, regions in coco.images():
        yield _task(image, annotations, regions, image_url, model_version)


def _task(image: dict, annotations: list[dict], regions: list[dict], image_url: str, model_version: str) -> dict:
    area = sum(annotation["area"] for annotation in annotations)
    score = sum(annotation["score"] * annotation["area"] for annotation in annotations) / area if area else 0.0
    result = [{"id": f"{image['id']}-{annotation['category_id']}", **region, "value": _unpacked(region["value"])}
              for annotation, region in zip(annotations, regions, strict=True)]
    return {"data": {IMAGE_TAG: image_url.replace("{path}", _quoted(image["file_name"]))},
            "predictions": [{"model_version": model_version, "score": round(score, 4), "result": result}]}


def _quoted(path: str) -> str:
    """``path`` URL-quoted; a name that is not UTF-8 (held as surrogates) keeps its own bytes."""
    return quote(path, errors="surrogateescape")


def brush_regions(mask: np.ndarray, coco_part: dict, class_names: dict[int, str]) -> list[dict]:
    """The regions of one image's prediction: one per class of its COCO part (``coco.image_entry``),
    its brush RLE made from the class's pixels in ``mask``. Made as each result arrives and kept in
    the image's JSON: at the end of a job of 2000 images this took 139 s (pure-Python RLE), and a
    resumed job made them all again. The RLE, a list of bytes, is kept as base64 (``rle_base64``):
    as a list of numbers, one a line in the indented JSON, it made each image's JSON 330 kB."""
    from label_studio_converter import brush  # the extra; imported where used (it loads pandas)

    height, width = mask.shape
    regions = []
    for annotation in coco_part["annotations"]:
        class_id = annotation["category_id"] - CATEGORY_ID_OFFSET
        pixels = np.where(mask == class_id, np.uint8(255), np.uint8(0))
        rle = base64.b64encode(bytes(brush.mask2rle(pixels))).decode()
        regions.append({"type": "brushlabels", "from_name": BRUSH_TAG, "to_name": IMAGE_TAG, "image_rotation": 0,
                        "original_width": width, "original_height": height, "score": annotation["score"],
                        "value": {"format": "rle", "rle_base64": rle,
                                  "brushlabels": [class_names[class_id]]}})
    return regions


def _unpacked(value: dict) -> dict:
    """A kept region's value as Label Studio reads it: the RLE as its list of bytes."""
    unpacked = {key: item for key, item in value.items() if key != "rle_base64"}
    return {**unpacked, "rle": list(base64.b64decode(value["rle_base64"]))}


def is_brush_regions(regions: object) -> bool:
    """Whether ``regions`` (read back from an image's JSON) are whole ``brush_regions``."""
    return isinstance(regions, list) and all(
        isinstance(region, dict) and isinstance(region.get("value"), dict) and
        isinstance(region["value"].get("rle_base64"), str) for region in regions)


def labeling_config(categories: list[dict]) -> str:
    """The labelling interface whose tag names and labels the tasks' regions refer to, each label
    in its class colour."""
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Image", name=IMAGE_TAG, value=f"${IMAGE_TAG}", zoom="true")
    labels = ElementTree.SubElement(view, "BrushLabels", name=BRUSH_TAG, toName=IMAGE_TAG)
    for category in categories:
        ElementTree.SubElement(labels, "Label", value=category["name"],
                               background="#{:02x}{:02x}{:02x}".format(*category["color"]))
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"
