"""Pre-annotating many files through the stream, with a progress bar; no image is ever skipped
silently: each one is written or listed as failed with its error."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

import grpc
from tqdm import tqdm

from prelabel_client.client import PreLabelClient
from prelabel_client.coco import CocoFile, image_entry, image_root
from prelabel_client.label_studio import brush_regions, check_ready, is_brush_regions, write_label_studio
from prelabel_client.outputs import (
    COCO_FILE,
    LABEL_STUDIO_CONFIG_FILE,
    LABEL_STUDIO_TASKS_FILE,
    MANIFEST_FILE,
    OUTPUT_KEYS,
    OUTPUT_SUFFIXES,
    SMALL_RANGE_MEASURES,
    OutputWriteError,
    output_names,
    remove_partial_files,
    write_prediction,
)
from prelabel_client.results import FailedPrediction, Prediction
from prelabel_proto.errors import ModelUnavailable, PrelabelError, ResourceExhausted

ResultT = TypeVar("ResultT")
# How the manifest marks an image the job never got an answer for (a second run may finish it).
NOT_PROCESSED = "not processed: "


@dataclass
class BatchReport:
    out_dir: Path
    written: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    coco_file: Path | None = None
    label_studio_files: tuple[Path, Path] | None = None  # tasks, labelling config
    kept: int = 0  # written by a previous run and kept (``resume``)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def describe(self) -> str:
        kept = f" ({self.kept} of them kept from the previous run)" if self.kept else ""
        done = self.written + self.kept
        lines = [f"{done} image{'' if done == 1 else 's'} pre-annotated{kept}; results in {self.out_dir.resolve()}"]
        if self.coco_file is not None:
            lines.append(f"COCO file (per-class masks as RLE): {self.coco_file.resolve()}")
        if self.label_studio_files is not None:
            tasks, config = (path.resolve() for path in self.label_studio_files)
            lines.append(f"Label Studio tasks (brush masks): {tasks}, for a project labelled with {config}")
        lines += [f"FAILED {name}: {error}" for name, error in self.failures.items()]
        return "\n".join(lines)


def predict_files(client: PreLabelClient, images: list[Path], out_dir: Path, *, model: str = "",
                  measure: str = "entropy", uncertainty_threshold: float | None = None,
                  patience_s: float = 600.0, coco: bool = False,
                  label_studio: str | None = None, resume: bool = False, previews: bool = True) -> BatchReport:
    """Pre-annotates ``images`` into ``out_dir`` over one stream. A server at its limit of open
    streams or calls refuses the stream before any image is processed; the job then waits its turn
    (up to ``patience_s``) instead of failing.

    Each image gets its own output names (see ``output_names``: the stem, or the stem and a short
    hash of the path where stems repeat); no input file is ever written over. ``manifest.jsonl``
    gets one line per image as its result arrives: its files, or the error (a file that cannot be
    written makes the image a failure). ``out_dir`` is checked before any request: one that cannot
    be created or written raises OutputFolderError. Should the job stop early (the stream lost, the
    server gone), every image not processed is listed in the manifest as failed with that error
    before the error propagates.

    ``coco`` also writes ``coco.json``: every written image's per-class masks as one COCO file
    (see ``CocoFile``), at the end of the job, and with the images done so far if it stops early.
    ``label_studio`` (an image URL template, see ``label_studio.write_label_studio``) writes the
    same masks as Label Studio tasks, beside the labelling config they belong to. Without
    ``previews`` no overlay or heat map is written (nor the uncertainty map asked for): in a job
    of a million images they are 400 of every 470 kB on disk and most of the client's CPU.

    ``resume`` continues a job cut short in the same ``out_dir``: an image whose previous manifest
    entry says it was written, by the model version now served with the same measure and threshold,
    and whose files are all in ``out_dir`` under its output name (with ``coco`` or ``label_studio``,
    its JSON holding its COCO part) is kept and not sent again; every other image is done (again).
    The previous manifest is only replaced once the server has answered, and the kept entries open
    the new one."""
    images = [Path(image) for image in images]
    segments = coco or label_studio is not None
    if label_studio is not None and images:
        check_ready(label_studio, image_root(images))
    _check_output_folder(out_dir, images)
    previous = _previous_entries(out_dir) if resume else {}
    manifest = None if resume else _open_manifest(out_dir)
    report = BatchReport(out_dir)
    todo: list[tuple[Path, str]] = [(image, "") for image in images]  # named below
    done = 0
    collected: CocoFile | None = None
    try:
        names = output_names(images, out_dir)
        todo = list(zip(images, names))
        served = client.model(model)
        collected = CocoFile(served.classes, images, f"{served.name} v{served.version}",
                             spool_dir=out_dir) if segments else None
        options = {"measure": measure, "uncertainty_threshold": uncertainty_threshold}  # None: the server's
        wanted = {"model": served.name, "model_version": served.version, **options}
        kept = {}
        for image, name in todo:
            found = _kept_entry(previous.get((str(image), name)), out_dir, name, wanted, segments,
                                label_studio is not None, previews)
            if found is not None:
                kept[(str(image), name)], parts = found
                if collected is not None:  # spooled now: a million kept images' parts would not fit in memory
                    collected.add(image, parts["coco"], parts.get("label_studio"))
        if manifest is None:
            manifest = _open_manifest(out_dir)
        for entry in kept.values():
            _append(manifest, entry)
        report.kept = len(kept)
        todo = [(image, name) for image, name in todo if (str(image), name) not in kept]
        outputs = ("mask",) + (("uncertainty",) if previews else ()) + (("class_segments",) if segments else ())
        precision = "png_uint16" if measure in SMALL_RANGE_MEASURES else "png_uint8"
        results = stream_when_admitted(lambda: client.predict_many([image for image, _ in todo], raise_on_error=False,
                                                                    model=model, measure=measure, outputs=outputs,
                                                                    uncertainty_format=precision,
                                                                    uncertainty_threshold=uncertainty_threshold),
                                   patience_s)
        class_names = {class_id: class_name for class_id, class_name, _ in served.classes}
        for (image, name), result in tqdm(zip(todo, results), total=len(todo), unit="img", desc="pre-annotating"):
            parts = _export_parts(result, class_names, label_studio is not None) if collected is not None else None
            entry = _written(result, image, name, out_dir, served.palette, options, parts, previews)
            _append(manifest, entry)
            done += 1  # from here on the manifest lists it: an interrupt must not list it again
            if "error" in entry:
                report.failures[str(image)] = entry["error"]
            else:
                report.written += 1
                if parts is not None:
                    collected.add(image, parts["coco"], parts.get("label_studio"))
        for image, _ in todo[done:]:  # a stream that ended without an answer for every image
            report.failures[str(image)] = "no result: the stream ended before this image was processed"
            _append(manifest, {"image": str(image), "error": report.failures[str(image)]})
            done += 1
        if collected is not None:
            _write_exports(collected, out_dir, report, coco, label_studio)
    except BaseException as exc:
        error = NOT_PROCESSED + _describe(exc)
        # Stopped by hand or by an orchestrator (SIGTERM), the job ends at once: the exports of
        # half a million images took hours to write, past any grace period, and `--resume` writes them.
        interrupted = isinstance(exc, KeyboardInterrupt)
        try:
            if manifest is not None:  # a resumed job that never reached the server keeps its manifest
                for image, _ in todo[done:]:
                    _append(manifest, {"image": str(image), "error": error})
                unanswered = sum(failure.startswith(NOT_PROCESSED) for failure in report.failures.values())
                if _resumable(exc):
                    exports = f" and write its {_export_names(coco, label_studio)}" if interrupted and collected else ""
                    exc.add_note(f"stopped with {unanswered + len(todo) - done} of {len(images)} images not processed "
                                 f"({report.written + report.kept} written, {report.failed - unanswered} failed; "
                                 f"each listed in {out_dir / MANIFEST_FILE}): run the same command with --resume "
                                 f"to finish{exports}")
            if collected is not None and not interrupted:
                _write_exports(collected, out_dir, report, coco, label_studio)
        except OSError:  # the outputs themselves cannot be written: the job's own error matters more
            pass
        raise
    finally:
        if manifest is not None:
            manifest.close()
    return report


def _write_exports(collected: CocoFile, out_dir: Path, report: BatchReport, coco: bool,
                   label_studio: str | None) -> None:
    """Writes the per-class masks collected so far in the formats asked for."""
    if coco:
        report.coco_file = out_dir / COCO_FILE
        collected.write(report.coco_file)
    if label_studio is not None:
        report.label_studio_files = write_label_studio(collected, out_dir, label_studio)


def _previous_entries(out_dir: Path) -> dict[tuple[str, str], dict]:
    """A previous run's manifest entries of written images, by image (as given) and output name; a
    line cut short by a crash, or not UTF-8, is none."""
    entries = {}
    try:
        lines = (out_dir / MANIFEST_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("image", "summary")):
                entries[(entry["image"], Path(entry["summary"]).stem)] = entry
    return entries


def _kept_entry(entry: dict | None, out_dir: Path, name: str, wanted: dict[str, str], segments: bool,
                label_studio: bool, previews: bool) -> tuple[dict, dict | None] | None:
    """A previous entry that stands, with its files' paths as they are now (``out_dir`` may be
    named otherwise than last time), and with ``segments`` its export parts (``_export_parts``):
    stamped with the model, version and options ``wanted``, every file it lists there and not
    empty, with ``previews`` its heat map among them, and the parts the job needs whole."""
    if entry is None or "error" in entry or any(entry.get(key) != value for key, value in wanted.items()):
        return None
    if previews and "uncertainty" not in entry:  # written without previews
        return None
    files = {key: out_dir / f"{name}{suffix}" for key, suffix in zip(OUTPUT_KEYS, OUTPUT_SUFFIXES) if key in entry}
    if not all(path.is_file() and path.stat().st_size > 0 for path in files.values()):
        return None
    parts = _saved_export_parts(files["summary"], label_studio) if segments else None
    if segments and parts is None:
        return None
    return {**entry, **{key: str(path) for key, path in files.items()}}, parts


def _export_parts(result: Prediction | FailedPrediction, class_names: dict[int, str],
                  label_studio: bool) -> dict | None:
    """What an image adds to the job's COCO file (``coco``) and Label Studio tasks
    (``label_studio``), kept in its JSON too so that a resumed job need not make them again."""
    if not isinstance(result, Prediction):
        return None
    parts = {"coco": image_entry(result)}
    if label_studio:
        parts["label_studio"] = brush_regions(result.mask, parts["coco"], class_names)
    return parts


def _saved_export_parts(summary: Path, label_studio: bool) -> dict | None:
    """The export parts an image's JSON holds (see ``_export_parts``), if whole."""
    try:
        saved = json.loads(summary.read_text(encoding="utf-8"))
        part = saved["coco"]
        whole = isinstance(part["height"], int) and isinstance(part["width"], int) and \
            all(isinstance(a, dict) and {"category_id", "segmentation", "area", "score"} <= a.keys()
                for a in part["annotations"])
        regions = saved.get("label_studio") if label_studio else None
        whole = whole and (not label_studio or (is_brush_regions(regions) and len(regions) == len(part["annotations"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not whole:
        return None
    return {"coco": part, "label_studio": regions} if label_studio else {"coco": part}


def _written(result: Prediction | FailedPrediction, image: Path, name: str, out_dir: Path,
             palette: list[tuple[int, int, int]], options: dict, export_parts: dict | None,
             previews: bool = True) -> dict[str, str]:
    """The manifest entry of one image: its files once written (and the model version and the
    job's ``options``, measure and threshold, that made them), or its error (the server's, or a
    file that could not be written)."""
    if isinstance(result, FailedPrediction):
        prefix = "" if result.answered else NOT_PROCESSED
        return {"image": str(image), "error": prefix + result.error.describe()}
    try:
        files = write_prediction(result, image, out_dir, palette, name=name, with_overlay=previews,
                                 extra=export_parts)
        return {"image": str(image), **files, "model": result.model, "model_version": result.model_version,
                **options}
    except OutputWriteError as exc:
        return {"image": str(image), "error": f"not written: {exc}"}


class OutputFolderError(OSError):
    """The job's output folder cannot be used: the user's to fix before anything is sent (the CLI
    says it in one line and exits 2, like any unusable input)."""


def _check_output_folder(out_dir: Path, images: list[Path]) -> None:
    """Creates ``out_dir`` and checks that its ``manifest.jsonl`` can be written (without emptying
    it: a resumed job still needs it), before anything is asked of the server; a path that is a
    file, a folder where no file can be made, or a manifest that is one of the inputs raises
    OutputFolderError. Files a killed job left half written are removed."""
    manifest = out_dir / MANIFEST_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if manifest.exists() and any(image.exists() and manifest.samefile(image) for image in images):
            raise OutputFolderError(f"cannot write results to {out_dir}: {manifest} is one of the inputs")
        manifest.open("a", encoding="utf-8").close()
        tempfile.TemporaryFile(dir=out_dir).close()  # outputs are written under new names, then renamed
        remove_partial_files(out_dir)
    except OutputFolderError:
        raise
    except OSError as exc:
        reason = "it is a file, not a folder" if out_dir.exists() and not out_dir.is_dir() else exc.strerror or exc
        raise OutputFolderError(f"cannot write results to {out_dir}: {reason}") from exc


def _open_manifest(out_dir: Path) -> TextIO:
    """Starts the job's record afresh: a new manifest, and no COCO or Label Studio file of an
    earlier job left beside it to be taken for this one's (the job writes its own at the end)."""
    for name in (COCO_FILE, LABEL_STUDIO_TASKS_FILE, LABEL_STUDIO_CONFIG_FILE):
        (out_dir / name).unlink(missing_ok=True)
    return (out_dir / MANIFEST_FILE).open("w", encoding="utf-8")


def _append(manifest: TextIO, entry: dict[str, str]) -> None:
    manifest.write(json.dumps(entry) + "\n")
    manifest.flush()


def _resumable(exc: BaseException) -> bool:
    """Whether running the job again may finish it: it was stopped, or lost the server, not refused
    for a reason a second run would meet again (an unknown model, an image URL it cannot write, a
    timeout too short for an image: its message says to raise it)."""
    if isinstance(exc, ResourceExhausted):
        return _server_busy(exc)
    return isinstance(exc, (KeyboardInterrupt, ModelUnavailable)) or \
        (isinstance(exc, PrelabelError) and exc.code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED))


def _raising(exc: BaseException) -> Iterator:
    raise exc
    yield  # a generator: raises when its turn comes


def _export_names(coco: bool, label_studio: str | None) -> str:
    """The job's exports, as its interrupt note names them."""
    return " and ".join(name for name, wanted in (("COCO", coco), ("Label Studio", label_studio)) if wanted) + " files"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PrelabelError):
        return exc.describe()
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (the CLI raises a subclass)
        return "the job was stopped (Ctrl-C or SIGTERM) before this image's result came"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _server_busy(error: ResourceExhausted) -> bool:
    """A refusal that waiting can cure: the server's stream or call limit, not a message too large."""
    return "PRELABEL_MAX_OPEN_STREAMS" in error.message or "PRELABEL_MAX_CONCURRENT_RPCS" in error.message


def stream_when_admitted(open_stream: Callable[[], Iterator[ResultT]], patience_s: float) -> Iterator[ResultT]:
    """``open_stream()``'s results; a stream refused for being over the server's stream or call
    limit before its first result (nothing was processed yet) is opened again, with back-off,
    until ``patience_s`` has passed. Failures the server did not answer (images the client
    refused to send, and images the refused stream left unanswered before them) are no sign of
    admission: they are held until an answer comes (a job with a missing image used to fail whole
    at a busy server instead of waiting)."""
    waited, delay = 0.0, 1.0
    while True:
        results = open_stream()
        unsent: list[ResultT] = []
        try:
            first = next(results)
            while isinstance(first, FailedPrediction) and not (first.sent and first.answered):
                unsent.append(first)
                first = next(results)
        except StopIteration:
            return iter(unsent)
        except PrelabelError as exc:
            if not isinstance(exc, ResourceExhausted) or waited >= patience_s or not _server_busy(exc):
                return itertools.chain(unsent, _raising(exc))  # the held failures keep their own errors
            tqdm.write(f"server busy ({exc.message.split(':')[0]}); opening the stream again in {delay:.0f} s",
                       file=sys.stderr)
            time.sleep(delay)
            waited, delay = waited + delay, min(delay * 2, 30.0)
            continue
        return itertools.chain(unsent, [first], results)
