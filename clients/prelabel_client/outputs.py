"""Writes a prediction as files a person can open: palette mask, colour overlay, uncertainty heat map."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from prelabel_client.results import Prediction
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


def write_prediction(prediction: Prediction, image_path: Path, out_dir: Path,
                     palette: list[tuple[int, int, int]]) -> dict[str, str]:
    """Writes ``<stem>_mask.png`` (the server's palette PNG, class ids as pixel values),
    ``<stem>_overlay.png``, ``<stem>_uncertainty.png`` and ``<stem>.json``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(image_path).stem
    written: dict[str, str] = {}
    if prediction.mask is not None:
        mask_path = out_dir / f"{stem}_mask.png"
        if prediction.response.mask.format != pb.ARRAY_FORMAT_PNG_UINT8:
            raise ValueError("write_prediction needs the mask requested as png_uint8 (the palette PNG)")
        mask_path.write_bytes(prediction.response.mask.data)
        written["mask"] = str(mask_path)
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is not None and image.shape[:2] == prediction.mask.shape:
            blended = overlay(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), prediction.mask, palette)
            overlay_path = out_dir / f"{stem}_overlay.png"
            cv2.imwrite(str(overlay_path), cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
            written["overlay"] = str(overlay_path)
    if prediction.uncertainty is not None:
        heat_path = out_dir / f"{stem}_uncertainty.png"
        cv2.imwrite(str(heat_path), heat_map(prediction.uncertainty))
        written["uncertainty"] = str(heat_path)
    summary_path = out_dir / f"{stem}.json"
    summary_path.write_text(json.dumps({"image": str(image_path), "model": prediction.model,
                                        "model_version": prediction.model_version, "backend": prediction.backend,
                                        "device": prediction.device, "summary": asdict(prediction.summary),
                                        "timings_ms": prediction.timings_ms, "files": written}, indent=2))
    written["summary"] = str(summary_path)
    return written
