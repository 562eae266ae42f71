"""``prelabel select``: rank a pool of unlabelled images through the server and pick the K that
people should label next, with a JSON list and an HTML report of what was chosen and why."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from prelabel_client.batch import stream_when_admitted
from prelabel_client.client import PreLabelClient
from prelabel_client.outputs import heat_map
from prelabel_client.results import FailedPrediction, ImageScores
from prelabel_models.acquisition import PoolItem, rarity_weights, select
from prelabel_models.image_files import read_image
from prelabel_proto.errors import PrelabelError

SCORES = ("mean", "top_fraction", "class_balanced")
_REASONS = {
    "uncertainty": "rank {rank} of the pool by {score} = {value:.4f}",
    "diverse": "{score} = {value:.4f}, among the {shortlist} most uncertain, and the farthest in embedding space "
               "from the images chosen before it",
    "random": "drawn at random (seed {seed}): the baseline",
}
# k-center greedy starts from the shortlisted image farthest from the shortlist's mean embedding
_FIRST_DIVERSE_REASON = ("{score} = {value:.4f}, among the {shortlist} most uncertain, and the farthest in "
                         "embedding space from their centre: the first pick")


@dataclass
class RankedImage:
    image: str
    score: float
    mean_uncertainty: float
    top_fraction_uncertainty: float
    rank: int = 0
    reason: str = ""


@dataclass
class Selection:
    strategy: str
    score: str
    measure: str
    budget: int
    model: str
    model_version: str
    selected: list[RankedImage] = field(default_factory=list)
    ranked: list[RankedImage] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _scorer(name: str, pool: list[ImageScores]) -> Callable[[ImageScores], float]:
    """The image-level score; ``class_balanced`` weights classes that are rare in this pool up."""
    if name == "mean":
        return lambda s: s.mean_uncertainty
    if name == "top_fraction":
        return lambda s: s.top_fraction_uncertainty
    if name == "class_balanced":
        fractions = np.mean([[c.pixel_fraction for c in s.classes] for s in pool], axis=0)
        weights = rarity_weights(fractions)
        return lambda s: float(sum(w * c.pixel_fraction * c.mean_uncertainty for w, c in zip(weights, s.classes)))
    raise ValueError(f"unknown score {name!r}; choose one of {list(SCORES)}")


def rank_pool(client: PreLabelClient, images: list[Path], budget: int, strategy: str, *, score: str = "top_fraction",
              measure: str = "entropy", model: str = "", seed: int = 0, patience_s: float = 600.0) -> Selection:
    """Scores every image over the Score stream, then lets ``strategy`` choose ``budget`` of them.

    No image is dropped silently: one that fails, or that the stream never answered (the server
    gone mid-run), is listed in ``failed`` with why, and the images scored before are kept. The
    model is looked up first, so a wrong name, or a server that does not answer within the
    client's timeout, fails once and at once rather than image by image. A server at its limit of
    open streams is waited for, as ``predict_files`` does (``patience_s``)."""
    served = client.model(model)
    scored: list[tuple[Path, ImageScores]] = []
    failed: dict[str, str] = {}
    unanswered = "not scored: the stream ended before this image was scored"
    try:
        results = stream_when_admitted(lambda: client.score_many(
            images, embeddings=strategy == "diverse", raise_on_error=False, model=model, measure=measure), patience_s)
        for path, result in tqdm(zip(images, results), total=len(images), unit="img", desc="scoring pool"):
            if isinstance(result, FailedPrediction):
                failed[str(path)] = ("" if result.answered else "not scored: ") + result.error.describe()
            else:
                scored.append((path, result))
    except PrelabelError as exc:
        unanswered = f"not scored: {exc.describe()}"
    for path in images[len(scored) + len(failed):]:
        failed[str(path)] = unanswered
    selection = Selection(strategy, score, measure, budget, model=served.name, model_version=served.version,
                          failed=failed)
    if scored:
        _choose(selection, scored, seed)
    return selection


def _choose(selection: Selection, scored: list[tuple[Path, ImageScores]], seed: int) -> None:
    """Ranks the scored images and fills in the ``selection.budget`` that its strategy chooses."""
    value_of = _scorer(selection.score, [s for _, s in scored])
    ranked = [RankedImage(str(path), value_of(s), s.mean_uncertainty, s.top_fraction_uncertainty) for path, s in scored]
    pool = [PoolItem(r.image, r.score, s.embedding) for r, (_, s) in zip(ranked, scored)]
    chosen = select(pool, selection.budget, selection.strategy, seed)
    for rank, index in enumerate(np.argsort([-r.score for r in ranked], kind="stable"), start=1):
        ranked[index].rank = rank
    for position, index in enumerate(chosen):
        item = ranked[index]
        first_diverse = selection.strategy == "diverse" and position == 0
        reason = _FIRST_DIVERSE_REASON if first_diverse else _REASONS[selection.strategy]
        item.reason = reason.format(rank=item.rank, score=selection.score, value=item.score,
                                    shortlist=min(len(ranked), 3 * selection.budget), seed=seed)
    selection.selected = [ranked[i] for i in chosen]
    selection.ranked = sorted(ranked, key=lambda r: r.rank)


class OutputFileError(OSError):
    """The selection's list or report cannot be written where asked: refused before the pool is
    scored (the CLI says it in one line and exits 2)."""


def check_outputs(selection_path: Path, report_path: Path, images: list[Path]) -> None:
    """Refuses, before any image is scored, outputs that could not be written or would overwrite
    each other or one of the pool's images."""
    if selection_path.resolve() == report_path.resolve():
        raise OutputFileError(f"the list and the report would both be written to {selection_path}: "
                              "give --out a .json name, or --report another file")
    inputs = {image.resolve() for image in images}
    for path in (selection_path, report_path):
        if path.resolve() in inputs:
            raise OutputFileError(f"{path} is one of the pool's images: write the selection elsewhere")
        if path.is_dir():
            raise OutputFileError(f"{path} is a folder: give a file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFileError(f"cannot write {path}: its folder cannot be created ({exc.strerror or exc})") from exc
        try:  # a real file, not os.access: root passes that check on folders that take no files (/proc)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as exc:
            raise OutputFileError(f"cannot write {path}: {path.parent} takes no new files ({exc.strerror or exc})") from exc


def write_selection(selection: Selection, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(selection), indent=2) + "\n")


def _data_uri(bgr: np.ndarray, width: int = 320) -> str:
    height = max(1, round(bgr.shape[0] * width / bgr.shape[1]))
    ok, png = cv2.imencode(".png", cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA))
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode() if ok else ""


def write_report(client: PreLabelClient, selection: Selection, path: Path) -> None:
    """A self-contained HTML page: each chosen image beside its uncertainty heat map, with why.

    The heat maps share one scale, up to the highest top-fraction score among the chosen images,
    so that measures whose values stay small (mutual information) still show where they are."""
    scale = max((item.top_fraction_uncertainty for item in selection.selected), default=0.0) or 1.0
    rows = [_report_row(order, item, outcome, scale) for order, (item, outcome)
            in enumerate(zip(selection.selected, _uncertainty_maps(client, selection)), start=1)]
    failed = "".join(f"<li>{html.escape(name)}: {html.escape(error)}</li>" for name, error in selection.failed.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>prelabel selection</title>
<style>body{{font-family:sans-serif}} td{{vertical-align:top;padding:4px}} img{{display:block}}</style></head><body>
<h1>Next {len(selection.selected)} images to label</h1>
<p>Strategy <b>{html.escape(selection.strategy)}</b>, score <b>{html.escape(selection.score)}</b> of
<b>{html.escape(selection.measure)}</b> uncertainty, model {html.escape(selection.model)}
v{html.escape(selection.model_version)}; {len(selection.ranked)} images ranked.
Heat maps: dark = sure, yellow = {selection.measure} {scale:.4f} or more (the highest top-5 % score
among these images).</p>
<table><tr><th>#</th><th>image</th><th>uncertainty</th><th>why</th></tr>{''.join(rows)}</table>
{f'<h2>Could not be scored</h2><ul>{failed}</ul>' if failed else ''}
</body></html>
""", encoding="utf-8")


def _uncertainty_maps(client: PreLabelClient, selection: Selection) -> Iterator[np.ndarray | str]:
    """Each chosen image's uncertainty map, or why there is none; a stream lost half way (the server
    gone) gives its error for every image it did not answer."""
    images = [Path(item.image) for item in selection.selected]
    answered, error = 0, "no result: the stream ended before this image was processed"
    try:
        for prediction in client.predict_many(images, raise_on_error=False, model=selection.model,
                                              measure=selection.measure, outputs=("uncertainty",)):
            answered += 1
            yield prediction.uncertainty if prediction.ok else str(prediction.error)
    except PrelabelError as exc:
        error = exc.describe()
    for _ in images[answered:]:
        yield error


def _report_row(order: int, item: RankedImage, outcome: np.ndarray | str, scale: float) -> str:
    photo = read_image(Path(item.image))
    cells = [f'<img alt="image" src="{_data_uri(photo)}">' if photo is not None else "(unreadable)",
             f'<img alt="uncertainty" src="{_data_uri(heat_map(np.clip(outcome / scale, 0.0, 1.0)))}">'
             if isinstance(outcome, np.ndarray) else html.escape(outcome)]
    return (f"<tr><td>{order}</td><td>{cells[0]}</td><td>{cells[1]}</td><td><b>{html.escape(Path(item.image).name)}"
            f"</b><br>{html.escape(item.reason)}<br>mean uncertainty {item.mean_uncertainty:.4f}, top-5% "
            f"{item.top_fraction_uncertainty:.4f}</td></tr>")
