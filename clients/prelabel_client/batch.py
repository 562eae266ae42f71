"""Pre-annotating many files through the stream, with a progress bar; no image is ever skipped
silently: each one is written or listed as failed with its error."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from prelabel_client.client import PreLabelClient
from prelabel_client.outputs import write_prediction
from prelabel_client.results import FailedPrediction
from prelabel_proto.errors import ResourceExhausted

ResultT = TypeVar("ResultT")


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
                  measure: str = "entropy", patience_s: float = 600.0) -> BatchReport:
    """Pre-annotates ``images`` into ``out_dir`` over one stream. A server at its limit of open
    streams or calls refuses the stream before any image is processed; the job then waits its turn
    (up to ``patience_s``) instead of failing."""
    palette = client.model(model).palette
    report = BatchReport(out_dir)
    manifest = []
    results = _stream_when_admitted(lambda: client.predict_many(images, raise_on_error=False, model=model,
                                                                measure=measure), patience_s)
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


def _server_busy(error: ResourceExhausted) -> bool:
    """A refusal that waiting can cure: the server's stream or call limit, not a message too large."""
    return "PRELABEL_MAX_OPEN_STREAMS" in error.message or "PRELABEL_MAX_CONCURRENT_RPCS" in error.message


def _stream_when_admitted(open_stream: Callable[[], Iterator[ResultT]], patience_s: float) -> Iterator[ResultT]:
    """``open_stream()``'s results; a stream refused for being over the server's stream or call
    limit before its first result (nothing was processed yet) is opened again, with back-off,
    until ``patience_s`` has passed."""
    waited, delay = 0.0, 1.0
    while True:
        results = open_stream()
        try:
            first = next(results)
        except StopIteration:
            return iter(())
        except ResourceExhausted as exc:
            if waited >= patience_s or not _server_busy(exc):
                raise
            tqdm.write(f"server busy ({exc.message.split(':')[0]}); opening the stream again in {delay:.0f} s",
                       file=sys.stderr)
            time.sleep(delay)
            waited, delay = waited + delay, min(delay * 2, 30.0)
            continue
        return itertools.chain([first], results)
