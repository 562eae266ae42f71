"""``prelabel select``: rank a pool of unlabelled images through the server and pick the K that
people should label next, with a JSON list and an HTML report of what was chosen and why."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from prelabel_client.client import PreLabelClient
from prelabel_client.outputs import heat_map
from prelabel_client.results import FailedPrediction, ImageScores
from prelabel_models.acquisition import PoolItem, rarity_weights, select

SCORES = ("mean", "top_fraction", "class_balanced")
_REASONS = {
    "uncertainty": "rank {rank} of the pool by {score} = {value:.4f}",
    "diverse": "{score} = {value:.4f}, among the {shortlist} most uncertain, and the farthest in embedding space "
               "from the images chosen before it",
    "random": "drawn at random (seed {seed}): the baseline",
}


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
              measure: str = "entropy", model: str = "", seed: int = 0) -> Selection:
    """Scores every image over the Score stream (a failed image is listed, never dropped silently),
    then lets ``strategy`` choose ``budget`` of them."""
    scored: list[tuple[Path, ImageScores]] = []
    failed: dict[str, str] = {}
    results = client.score_many(images, embeddings=strategy == "diverse", raise_on_error=False, model=model,
                                measure=measure)
    for path, result in tqdm(zip(images, results), total=len(images), unit="img", desc="scoring pool"):
        if isinstance(result, FailedPrediction):
            failed[str(path)] = f"{result.error.code.name}: {result.error.message}"
        else:
            scored.append((path, result))
    selection = Selection(strategy, score, measure, budget, model=scored[0][1].model if scored else model,
                          model_version=scored[0][1].model_version if scored else "", failed=failed)
    if not scored:
        return selection
    value_of = _scorer(score, [s for _, s in scored])
    ranked = [RankedImage(str(path), value_of(s), s.mean_uncertainty, s.top_fraction_uncertainty) for path, s in scored]
    pool = [PoolItem(r.image, r.score, s.embedding) for r, (_, s) in zip(ranked, scored)]
    chosen = select(pool, budget, strategy, seed)
    for rank, index in enumerate(np.argsort([-r.score for r in ranked], kind="stable"), start=1):
        ranked[index].rank = rank
    for index in chosen:
        item = ranked[index]
        item.reason = _REASONS[strategy].format(rank=item.rank, score=score, value=item.score,
                                                shortlist=min(len(ranked), 3 * budget), seed=seed)
    selection.selected = [ranked[i] for i in chosen]
    selection.ranked = sorted(ranked, key=lambda r: r.rank)
    return selection


def write_selection(selection: Selection, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(selection), indent=2) + "\n")


def _data_uri(bgr: np.ndarray, width: int = 320) -> str:
    height = max(1, round(bgr.shape[0] * width / bgr.shape[1]))
    ok, png = cv2.imencode(".png", cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA))
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode() if ok else ""


def write_report(client: PreLabelClient, selection: Selection, path: Path) -> None:
    """A self-contained HTML page: each chosen image beside its uncertainty heat map, with why."""
    images = [Path(item.image) for item in selection.selected]
    rows = []
    predictions = client.predict_many(images, raise_on_error=False, model=selection.model,
                                      measure=selection.measure, outputs=("uncertainty",))
    for order, (item, prediction) in enumerate(zip(selection.selected, predictions), start=1):
        photo = cv2.imread(item.image, cv2.IMREAD_COLOR)
        heat = heat_map(prediction.uncertainty) if prediction.ok else None
        cells = [f'<img alt="image" src="{_data_uri(photo)}">' if photo is not None else "(unreadable)",
                 f'<img alt="uncertainty" src="{_data_uri(heat)}">' if heat is not None else html.escape(str(prediction.error))]
        rows.append(f"<tr><td>{order}</td><td>{cells[0]}</td><td>{cells[1]}</td><td><b>{html.escape(Path(item.image).name)}"
                    f"</b><br>{html.escape(item.reason)}<br>mean uncertainty {item.mean_uncertainty:.4f}, top-5% "
                    f"{item.top_fraction_uncertainty:.4f}</td></tr>")
    failed = "".join(f"<li>{html.escape(name)}: {html.escape(error)}</li>" for name, error in selection.failed.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>prelabel selection</title>
<style>body{{font-family:sans-serif}} td{{vertical-align:top;padding:4px}} img{{display:block}}</style></head><body>
<h1>Next {len(selection.selected)} images to label</h1>
<p>Strategy <b>{html.escape(selection.strategy)}</b>, score <b>{html.escape(selection.score)}</b> of
<b>{html.escape(selection.measure)}</b> uncertainty, model {html.escape(selection.model)}
v{html.escape(selection.model_version)}; {len(selection.ranked)} images ranked.
Heat maps: dark = sure, yellow = unsure.</p>
<table><tr><th>#</th><th>image</th><th>uncertainty</th><th>why</th></tr>{''.join(rows)}</table>
{f'<h2>Could not be scored</h2><ul>{failed}</ul>' if failed else ''}
</body></html>
""")
