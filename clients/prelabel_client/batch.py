"""Pre-annotating many files through the stream, with a progress bar; no image is ever skipped
silently: each one is written or listed as failed with its error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from prelabel_client.client import PreLabelClient
from prelabel_client.outputs import write_prediction
from prelabel_client.results import FailedPrediction


@dataclass
class BatchReport:
    out_dir: Path
    written: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def describe(self) -> str:
        lines = [f"{self.written} images pre-annotated; results in {self.out_dir.resolve()}"]
        lines += [f"FAILED {name}: {error}" for name, error in self.failures.items()]
        return "\n".join(lines)


def predict_files(client: PreLabelClient, images: list[Path], out_dir: Path, *, model: str = "",
                  measure: str = "entropy") -> BatchReport:
    palette = client.model(model).palette
    report = BatchReport(out_dir)
    manifest = []
    results = client.predict_many(images, raise_on_error=False, model=model, measure=measure)
    for image, result in tqdm(zip(images, results), total=len(images), unit="img", desc="pre-annotating"):
        if isinstance(result, FailedPrediction):
            report.failures[str(image)] = f"{result.error.code.name}: {result.error.message}"
            manifest.append({"image": str(image), "error": report.failures[str(image)]})
            continue
        manifest.append({"image": str(image), **write_prediction(result, image, out_dir, palette)})
        report.written += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in manifest))
    return report
