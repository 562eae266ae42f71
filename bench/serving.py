"""Serving benchmark: prelabel over gRPC against raw ONNX Runtime, side by side in one run.

    .venv/bin/python bench/serving.py [--model-dir models/camvid] [--images 40] [--repeats 3] [--out bench/results/serving.json]
                                      [--cuda auto|only|off]

Prints a table (images/s, p50/p95/p99 latency, ratio to the raw-runtime limit, server CPU use and
peak RSS) and writes it as JSON. The server runs in its own process, started here, so its CPU and
memory are measured apart from the client's; on a 2-core machine the client still competes with it.

Where torch sees a CUDA device, a second section measures the torch backend on it (fp32 and fp16
autocast, in-process: the GPU's limit) and the server on it, each against that limit; ``--cuda only``
runs that section alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from procstats import ProcessStats  # noqa: E402

from prelabel_client import PreLabelClient  # noqa: E402
from prelabel_models import ModelPackage  # noqa: E402
from prelabel_models.backends import Backend, create_backend  # noqa: E402
from prelabel_models.image_files import list_images, read_rgb  # noqa: E402
from prelabel_models.predictor import Predictor  # noqa: E402

CAMVID_VAL = ROOT.parent / "shared" / "data" / "camvid" / "val"
# Raw pixels in, raw maps out: the client sends decoded arrays (decoded before the clock starts, as
# a pipeline holding images in memory would) and takes the mask and uncertainty without PNG.
RAW_IO = {"mask_format": "raw_uint8", "uncertainty_format": "raw_float16"}
RAW_IO_NOTE = "client sends pixels, takes raw maps: no codec on the server"
PAIRED_RAW_BATCH_1 = "raw onnxruntime, batch 1, beside conc. 1"  # the latency target's yardstick
CUDA_DEVICE = "cuda:0"
CUDA_BATCH_SIZES = (1, 4, 8, 16, 32)
CUDA_MAX_BATCH = 32  # the server's max_batch_size on the GPU (the card's 4 is sized for 2 CPU cores)
CUDA_PASSES = 8  # each image sent this many times per GPU measurement
CUDA_PROCESSES = (1, 4)  # server processes compared on the GPU
# Threads and read-ahead for concurrency 64 on the GPU machine's 16 cores (the defaults suit 2 cores).
CUDA_THREADS = {"PRELABEL_WORKERS": "64", "PRELABEL_STREAM_WORKERS": "16", "PRELABEL_MAX_IN_FLIGHT_PER_STREAM": "64"}


@dataclass
class Row:
    name: str
    images: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ratio_to_limit: float = 0.0
    server_cpu_cores: float = 0.0
    server_peak_rss_mb: float = 0.0
    server_rss_after_mb: float = 0.0  # just after the row's last round
    client_cpu_cores: float = 0.0  # this process: the Python client (or, for raw rows, the runtime)
    note: str = ""
    stages_ms: dict[str, float] = field(default_factory=dict)  # served rows: medians of each stage
    round_ratios: list[float] = field(default_factory=list)  # each round's ratio to its own raw run

    @property
    def ratio_text(self) -> str:
        """The median ratio and its rounds' range: on a shared machine a target a few points from
        the median can be met in one run and missed in the next, and the range shows it."""
        if len(self.round_ratios) < 2:
            return f"{self.ratio_to_limit:.1%}"
        return f"{self.ratio_to_limit:.1%} (rounds {min(self.round_ratios):.1%} to {max(self.round_ratios):.1%})"

    @property
    def cpu_ms_per_image(self) -> float:
        """Server and this process together: the machine's CPU cost of one image."""
        return (self.server_cpu_cores + self.client_cpu_cores) / self.images_per_s * 1000

    def report(self) -> dict:
        return {**asdict(self), "cpu_ms_per_image": self.cpu_ms_per_image}


@dataclass
class Measurement:
    """One timed run: per-image latencies (s), its wall time (s) and, for served requests, each
    response's stage timings (ms): the server's own, and the time spent outside it."""

    latencies: list[float]
    wall: float
    stages: list[dict[str, float]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return len(self.latencies) / self.wall


class RawBackend:
    """A backend in-process on pre-normalised inputs: no gRPC, no decoding, no post-processing.
    The limit the served rows are measured against (ONNX Runtime on the CPU, torch on a GPU)."""

    def __init__(self, backend: Backend, inputs: np.ndarray, warm_up_batches: tuple[int, ...] = (1,)) -> None:
        self.backend, self.inputs = backend, inputs
        for batch in warm_up_batches:  # kernels chosen and memory cached per shape
            self.backend.run(inputs[:batch])

    def run(self, batch: int) -> Measurement:
        return timed_batches(self.backend.run, self.inputs, batch)


def raw_onnxruntime(package: ModelPackage, images: list[np.ndarray]) -> RawBackend:
    backend = create_backend("onnx", package)
    return RawBackend(backend, normalised(Predictor(package.card, backend), images))


def normalised(predictor: Predictor, images: list[np.ndarray]) -> np.ndarray:
    """The network inputs of ``images`` as the server makes them (padded, normalised), stacked."""
    return np.stack([predictor.model_input(image) for image in images])


def timed_batches(run: Callable[[np.ndarray], object], inputs: np.ndarray, batch: int) -> Measurement:
    """Per-image latencies and the wall time of running ``inputs`` through ``run``, ``batch`` at a time."""
    latencies, started = [], time.perf_counter()
    for start in range(0, len(inputs) - batch + 1, batch):
        t = time.perf_counter()
        run(inputs[start: start + batch])
        latencies += [(time.perf_counter() - t) / batch] * batch
    return Measurement(latencies, time.perf_counter() - started)


def raw_runtime(runtime: RawBackend, batch_sizes: list[int], repeats: int,
                label: str = "raw onnxruntime") -> list[Row]:
    """The limit's candidates: the batch sizes take turns, ``repeats`` rounds, and each keeps its
    median round."""
    rounds = {batch: [] for batch in batch_sizes}
    cpu: dict[int, list[float]] = {batch: [] for batch in batch_sizes}
    for _ in range(repeats):
        for batch in batch_sizes:
            client = _ClientCpu()
            rounds[batch].append(runtime.run(batch))
            cpu[batch].append(client.cores())
            print(f"  {label}, batch {batch}: {rounds[batch][-1].images_per_s:.2f} img/s", file=sys.stderr, flush=True)
    rows = [_median_row(f"{label}, batch {batch}", rounds[batch]) for batch in batch_sizes]
    for row, batch in zip(rows, batch_sizes):
        row.client_cpu_cores = float(np.median(cpu[batch]))
    return rows


def _median_row(name: str, rounds: list[Measurement], note: str = "") -> Row:
    """Throughput of the median round; latency percentiles and stage medians over every round's
    requests."""
    ms = np.asarray([latency for measured in rounds for latency in measured.latencies]) * 1000
    images_per_s = float(np.median([measured.images_per_s for measured in rounds]))
    stages = [stage for measured in rounds for stage in measured.stages]
    stage_medians = {key: float(np.median([stage[key] for stage in stages])) for key in (stages[0] if stages else {})}
    return Row(name, len(rounds[0].latencies), images_per_s, *np.percentile(ms, [50, 95, 99]).tolist(), note=note,
               stages_ms=stage_medians)


def optimisation_levels(package: ModelPackage, inputs: np.ndarray) -> tuple[list[Row], dict[str, float]]:
    """Raw ONNX Runtime at batch 1 per graph-optimisation level on normalised ``inputs``, and the
    session start-up time with and without a saved optimised model (what caching one would buy)."""
    import onnxruntime as ort

    rows, startup = [], {}
    saved = package.folder / "bench-optimised.onnx"
    for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if level == "ORT_ENABLE_ALL":
            options.optimized_model_filepath = str(saved)
        started = time.perf_counter()
        session = ort.InferenceSession(str(package.onnx_path), options, providers=["CPUExecutionProvider"])
        startup[f"session start, {level}"] = time.perf_counter() - started
        session.run(None, {"images": inputs[:1]})
        cpu = _ClientCpu()
        timed = timed_batches(lambda batch: session.run(None, {"images": batch}), inputs, 1)
        rows.append(_median_row(f"raw onnxruntime, batch 1, {level.removeprefix('ORT_').lower()}", [timed]))
        rows[-1].client_cpu_cores = cpu.cores()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    started = time.perf_counter()
    ort.InferenceSession(str(saved), options, providers=["CPUExecutionProvider"])
    startup["session start, saved optimised model"] = time.perf_counter() - started
    saved.unlink()
    return rows, startup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`prelabel serve` in ``processes`` child processes sharing one port (SO_REUSEPORT: the kernel
    spreads connections over them), with CPU time and peak RSS read from /proc."""

    def __init__(self, model_repository: Path, processes: int = 1, **env: str) -> None:
        self.port = _free_port()
        environment = {**os.environ, "PRELABEL_PORT": str(self.port), "PRELABEL_BACKEND": "onnx",
                       "PRELABEL_MODEL_REPOSITORY": str(model_repository),
                       "PRELABEL_REUSE_PORT": str(processes > 1).lower(), **env}
        self.processes = []
        self._log = tempfile.TemporaryFile("w+")  # the servers' log, shown if one fails to start
        for _ in range(processes):
            process = subprocess.Popen([sys.executable, "-m", "prelabel_client.cli", "serve"], env=environment,
                                       stdout=subprocess.PIPE, stderr=self._log, text=True)
            self.processes.append(process)
            for line in process.stdout:  # printed once the models are loaded and the port is bound
                if "serving on" in line:
                    break
            else:
                self._log.seek(0)
                raise RuntimeError(f"prelabel serve exited before serving:\n{self._log.read()[-3000:]}")
        self.address = f"127.0.0.1:{self.port}"
        self.stats = ProcessStats([p.pid for p in self.processes])

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                self._log.seek(0)
                print(f"prelabel serve ignored SIGTERM for 30 s; killed. Its log ends:\n{self._log.read()[-3000:]}",
                      file=sys.stderr)
                process.kill()
                process.wait()
        self._log.close()


def unary(address: str, payloads: list[bytes], concurrency: int, connections: int = 1,
          **options: object) -> Measurement:
    """``concurrency`` callers over ``connections`` separate connections. Several are needed to
    reach more than one server process behind SO_REUSEPORT, and many to load them evenly: the
    kernel places each connection by a hash, and with 4 connections on 2 processes one process
    often took 75 % of the calls (docs/benchmarks.md)."""
    clients = [PreLabelClient(address, timeout=300, channel_options=[("grpc.use_local_subchannel_pool", 1)])
               for _ in range(connections)]
    try:
        for client in clients:
            client.predict(payloads[0], **options)  # warm-up

        def one(indexed: tuple[int, bytes]) -> tuple[float, dict[str, float]]:
            t = time.perf_counter()
            prediction = clients[indexed[0] % connections].predict(indexed[1], **options)
            latency = time.perf_counter() - t
            return latency, {**prediction.timings_ms, "outside server": latency * 1000 - prediction.timings_ms["total"]}

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            answered = list(pool.map(one, enumerate(payloads)))
        return Measurement([latency for latency, _ in answered], time.perf_counter() - started,
                           [stages for _, stages in answered])
    finally:
        for client in clients:
            client.close()


def stream(address: str, payloads: list[bytes], window: int, **options: object) -> Measurement:
    """Latencies are the server's own (``total``): a streamed item's round trip is not observable."""
    with PreLabelClient(address, timeout=300) as client:
        started = time.perf_counter()
        stages = [p.timings_ms for p in client.predict_many(payloads, window=window, **options)]
        return Measurement([stage["total"] / 1000 for stage in stages], time.perf_counter() - started, stages)


@dataclass
class Spec:
    name: str
    run: Callable[[], Measurement]
    note: str = ""
    server: "ServerProcess | None" = None  # whose CPU and memory the row reports; None: interleaved's server


def interleaved(server: ServerProcess, specs: list[Spec], reference: Callable[[], Measurement],
                repeats: int) -> list[Row]:
    """Each spec once per round, ``repeats`` rounds, each round opened by ``reference`` (raw ONNX
    Runtime at its best batch size): drift on a shared machine hits every spec of a comparison
    alike, and each row's ratio to the limit is the median of its per-round ratios to that round's
    raw run. Rows keep the median round's throughput and CPU. Specs may name servers of their own
    (all started before), so that two configurations take turns within each round."""
    rounds: dict[str, list] = {spec.name: [] for spec in specs}
    ratios: dict[str, list[float]] = {spec.name: [] for spec in specs}
    cpu: dict[str, list[float]] = {spec.name: [] for spec in specs}
    client_cpu: dict[str, list[float]] = {spec.name: [] for spec in specs}
    stats_of = {spec.name: (spec.server or server).stats for spec in specs}
    rss_after: dict[str, float] = {}  # the server's RSS just after each spec's last run
    for _ in range(repeats):
        limit = reference().images_per_s
        for spec in specs:
            stats = stats_of[spec.name]
            stats.start()
            client = _ClientCpu()
            rounds[spec.name].append(spec.run())
            rss_after[spec.name] = stats.rss_mb()
            print(f"  {spec.name}: {rounds[spec.name][-1].images_per_s:.2f} img/s", file=sys.stderr, flush=True)
            cpu[spec.name].append(stats.cpu_cores())
            client_cpu[spec.name].append(client.cores())
            ratios[spec.name].append(rounds[spec.name][-1].images_per_s / limit)
    rows = []
    for spec in specs:
        row = _median_row(spec.name, rounds[spec.name], spec.note)
        row.round_ratios = ratios[spec.name]
        row.ratio_to_limit = float(np.median(row.round_ratios))
        row.server_cpu_cores = float(np.median(cpu[spec.name]))
        row.server_peak_rss_mb = stats_of[spec.name].peak_rss_mb()
        row.server_rss_after_mb = rss_after[spec.name]
        row.client_cpu_cores = float(np.median(client_cpu[spec.name]))
        rows.append(row)
    return rows


class _ClientCpu:
    """Cores this process (the client, all its threads) kept busy since it was made."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def cores(self) -> float:
        return (time.process_time() - self._cpu) / max(time.perf_counter() - self._wall, 1e-9)


def large_photo(image: np.ndarray) -> bytes:
    big = cv2.resize(image, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))[1].tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "camvid")
    parser.add_argument("--images", type=int, default=40, help="requests per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement; rows keep the median")
    parser.add_argument("--data", type=Path, default=CAMVID_VAL)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    parser.add_argument("--cuda", choices=("auto", "only", "off"), default="auto",
                        help="the CUDA section: after the CPU one where a GPU is visible (auto), alone, or never")
    args = parser.parse_args()

    package = ModelPackage.open(args.model_dir)
    paths = list_images(args.data)[: args.images]
    payloads = [p.read_bytes() for p in paths]
    images = [read_rgb(p) for p in paths]
    report = {"machine": machine(), "model": package.card.name, "images": len(paths), "repeats": args.repeats}
    rows, verdicts = [], []
    if args.cuda != "only":
        cpu_rows, startup, limit = cpu_section(package, args.model_dir.resolve().parent, images, payloads, args.repeats)
        rows += cpu_rows
        verdicts += check_targets({r.name: r for r in cpu_rows})
        report |= {"limit_images_per_s": limit, "startup_seconds": startup}
    if args.cuda == "only" or (args.cuda == "auto" and cuda_visible()):
        cuda_rows, cuda_limit, notes = cuda_section(package, images, payloads, args.repeats)
        rows += cuda_rows
        verdicts += check_cuda_targets({r.name: r for r in cuda_rows})
        report |= {"cuda_limit_images_per_s": cuda_limit, "cuda_notes": notes}

    print_table(rows)
    print()
    print_stages(rows)
    print()
    for verdict in verdicts:
        print(f"{'met' if verdict['met'] else 'NOT met':>8}  {verdict['target']}: {verdict['measured']}")
    for name, value in {**report.get("startup_seconds", {}), **report.get("cuda_notes", {})}.items():
        print(f"{name:<42} {value:7.2f} s" if isinstance(value, float) else f"{name}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report |= {"rows": [r.report() for r in rows], "targets": verdicts}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    if cuda_visible():
        import torch

        info |= {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    return info


def cuda_visible() -> bool:
    """Whether torch is installed and sees a CUDA device (the server may be an ONNX-only install)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def cpu_section(package: ModelPackage, repository: Path, images: list[np.ndarray], payloads: list[bytes],
                repeats: int) -> tuple[list[Row], dict[str, float], float]:
    """Issue #4's measurements on ONNX Runtime on the CPU; returns the rows, the session start-up
    times and the limit (raw ONNX Runtime at its best batch size)."""
    runtime = raw_onnxruntime(package, images)
    rows = raw_runtime(runtime, [1, 2, 4], repeats)
    limit = max(r.images_per_s for r in rows)
    best_batch = int(max(rows, key=lambda r: r.images_per_s).name.rsplit(" ", 1)[1])
    reference = partial(runtime.run, best_batch)  # opens every comparison round below
    level_rows, startup = optimisation_levels(package, runtime.inputs[:16])
    rows += level_rows
    for r in rows:
        r.ratio_to_limit = r.images_per_s / limit

    with ServerProcess(repository) as server, ServerProcess(repository, PRELABEL_BATCHING="false") as unbatched:
        address = server.address
        batched_specs = {c: Spec(f"prelabel Predict, concurrency {c}", lambda c=c: unary(address, payloads, c)) for c in (1, 4, 16)}
        unbatched_specs = {c: Spec(f"batching off, Predict concurrency {c}", lambda c=c: unary(unbatched.address, payloads, c),
                                   "one request at a time per thread", unbatched) for c in (1, 16)}
        raw_beside_c1 = Spec(PAIRED_RAW_BATCH_1, lambda: runtime.run(1), "in the same rounds as concurrency 1")
        # each pair to compare runs back to back within a round
        rows += interleaved(server, [raw_beside_c1, batched_specs[1], unbatched_specs[1], batched_specs[4], batched_specs[16],
                                     unbatched_specs[16],
                                     Spec("prelabel PredictStream, window 16", lambda: stream(address, payloads, 16)),
                                     Spec("PredictStream, window 16, raw in and out", lambda: stream(address, images, 16, **RAW_IO),
                                          RAW_IO_NOTE)],
                            reference, repeats)
        rows += interleaved(server, [
            Spec(f"Predict concurrency 4, {'mask only' if outputs == ('mask',) else 'mask + ' + measure}",
                 lambda outputs=outputs, measure=measure: unary(address, payloads, 4, outputs=outputs, measure=measure))
            for outputs, measure in ((("mask",), "entropy"), (("mask", "uncertainty"), "entropy"),
                                     (("mask", "uncertainty"), "margin"), (("mask", "uncertainty"), "least_confidence"))
        ], reference, repeats)
        sampled = payloads[: max(8, len(payloads) // 4)]
        specs = [Spec("Predict concurrency 1, mask + entropy", lambda: unary(address, sampled, 1),
                      "reference for the sampled measures below")]
        if package.card.head_dropout > 0:
            specs.append(Spec("Predict concurrency 1, MC dropout x8",
                               lambda: unary(address, sampled, 1, measure="mutual_information", mc_samples=8),
                               "encoder once, head 8 times"))
        specs.append(Spec("Predict concurrency 1, TTA (6 passes)", lambda: unary(address, sampled, 1, measure="tta_entropy")))
        rows += interleaved(server, specs, reference, repeats)
    with ServerProcess(repository, PRELABEL_ONNX_SPIN_WAIT="false") as server:
        rows += interleaved(server, [Spec(f"ORT spin-wait off, Predict concurrency {c}", lambda c=c: unary(server.address, payloads, c),
                                          "idle runtime threads sleep") for c in (1, 16)], reference, repeats)
    with ServerProcess(repository) as server:
        rows += interleaved(server, [Spec("1 process, Predict conc. 16, 16 connections",
                                          lambda: unary(server.address, payloads, 16, connections=16),
                                          "threads: decoding and encoding overlap inference")], reference, repeats)
    with ServerProcess(repository, processes=2, PRELABEL_INFERENCE_THREADS="1") as server:
        rows += interleaved(server, [Spec("2 processes x 1 thread, conc. 16, 16 conns",
                                          lambda: unary(server.address, payloads, 16, connections=16),
                                          "SO_REUSEPORT; each process its own model")], reference, repeats)
    with ServerProcess(repository) as server:
        photo = large_photo(images[0])
        specs = [Spec("4000x3000 photo (tiled), Predict", lambda: unary(server.address, [photo] * 3, 1),
                      "latency per photo")]
        if package.card.head_dropout > 0:
            specs.append(Spec("then MC dropout x64, Predict concurrency 1",
                              lambda: unary(server.address, payloads[:4], 1, measure="mutual_information",
                                            mc_samples=64),
                              "same server, after the photos: peak RSS is theirs or its"))
        rows += interleaved(server, specs, reference, 1)
    rows += host_only(package, payloads * 4, images * 4, reference, repeats, 16)
    return rows, startup, limit


def cuda_section(package: ModelPackage, images: list[np.ndarray], payloads: list[bytes],
                 repeats: int) -> tuple[list[Row], float, dict[str, str]]:
    """The torch backend on the GPU: in-process fp32, fp16, and fp16 replayed from CUDA graphs (the
    limit: the faster fp16 at its best batch size), then the server on the GPU with fp16, paired
    in every round with batching off, maps on the host and CUDA graphs off; then one process and
    several. The GPU is fast enough that the images are cycled to ``CUDA_PASSES`` times as many
    requests, so each measurement lasts."""
    import onnxruntime as ort

    variants = {"fp32": {}, "fp16": {"fp16": True}, "fp16, CUDA graphs": {"fp16": True, "cuda_graphs": True}}
    backends = {name: create_backend("torch", package, device=CUDA_DEVICE, **options) for name, options in variants.items()}
    predictor = Predictor(package.card, backends["fp32"])
    inputs = predictor.stack_inputs(list(normalised(predictor, images * CUDA_PASSES)))  # page-locked, as the server's batches
    payloads, images = payloads * CUDA_PASSES, images * CUDA_PASSES
    rows, runs = [], {}
    for name, backend in backends.items():
        runtime = RawBackend(backend, inputs, CUDA_BATCH_SIZES)
        measured = raw_runtime(runtime, list(CUDA_BATCH_SIZES), repeats, f"cuda: raw torch {name}")
        rows += measured
        runs |= {row.name: partial(runtime.run, batch) for row, batch in zip(measured, CUDA_BATCH_SIZES)}
    fastest = max((r for r in rows if "fp16" in r.name), key=lambda r: r.images_per_s)
    limit = fastest.images_per_s
    for r in rows:
        r.ratio_to_limit = r.images_per_s / limit
    reference = runs[fastest.name]
    notes = {"onnxruntime CUDA": ("available, not measured yet" if "CUDAExecutionProvider" in ort.get_available_providers()
                                  else f"not measured: onnxruntime {ort.__version__} here has no CUDA provider (install "
                                       "onnxruntime-gpu in its place to measure it)")}
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch)
        package.copy_to(repository / package.card.name, max_batch_size=CUDA_MAX_BATCH)
        env = {"PRELABEL_BACKEND": "torch", "PRELABEL_DEVICE": CUDA_DEVICE, "PRELABEL_FP16": "true", **CUDA_THREADS}
        with (ServerProcess(repository, **env) as server,
              ServerProcess(repository, PRELABEL_BATCHING="false", **env) as unbatched,
              ServerProcess(repository, PRELABEL_DEVICE_MAPS="false", **env) as host_maps,
              ServerProcess(repository, PRELABEL_CUDA_GRAPHS="false", **env) as eager):
            address = server.address
            on = {c: Spec(f"cuda: prelabel Predict, concurrency {c}", lambda c=c: unary(address, payloads, c, connections=4))
                  for c in (1, 4, 16, 64)}
            off = {c: Spec(f"cuda: batching off, Predict concurrency {c}",
                           lambda c=c: unary(unbatched.address, payloads, c, connections=4),
                           "one request at a time per thread", unbatched) for c in (16, 64)}
            maps_on_host = Spec("cuda: maps on the host, Predict conc. 64",
                                lambda: unary(host_maps.address, payloads, 64, connections=4),
                                "PRELABEL_DEVICE_MAPS=false: logits copied back", host_maps)
            without_graphs = Spec("cuda: CUDA graphs off, Predict conc. 64", lambda: unary(eager.address, payloads, 64, connections=4),
                                  "PRELABEL_CUDA_GRAPHS=false: layer by layer", eager)
            # each pair to compare runs back to back within a round
            rows += interleaved(server, [on[1], on[4], on[16], off[16], on[64], off[64], maps_on_host, without_graphs,
                                         Spec("cuda: prelabel PredictStream, window 64", lambda: stream(address, payloads, 64)),
                                         Spec("cuda: PredictStream, window 64, raw in and out",
                                              lambda: stream(address, images, 64, **RAW_IO), RAW_IO_NOTE)],
                                reference, repeats)
        rows += cuda_processes(repository, payloads, reference, repeats, env)
    return rows, limit, notes


def cuda_processes(repository: Path, payloads: list[bytes], reference: Callable[[], Measurement],
                   repeats: int, env: dict[str, str]) -> list[Row]:
    """One server process against several on one port (SO_REUSEPORT), each with its own model on
    the GPU. One process keeps only a few of the cores busy; if one process's GIL were the limit,
    several would serve more (on an H100 four did not: docs/benchmarks.md)."""
    rows = []
    for processes in CUDA_PROCESSES:
        with ServerProcess(repository, processes=processes, **env) as server:
            rows += interleaved(server, [Spec(f"cuda: {processes} process{'es' if processes > 1 else ''}, conc. 64, 64 conns",
                                              lambda: unary(server.address, payloads, 64, connections=64),
                                              "SO_REUSEPORT; each process its own model")], reference, repeats)
    return rows


def host_only(package: ModelPackage, payloads: list[bytes], images: list[np.ndarray],
              reference: Callable[[], Measurement], repeats: int, concurrency: int) -> list[Row]:
    """The server with the network swapped for a pointwise one on ONNX Runtime
    (``write_pointwise_network``): decoding, batching, maps, summary, encoding and gRPC at the same
    image size, with almost no inference. Its throughput is the most this host lets the CPU path
    deliver, however fast the runtime. Its CPU use shows whether the host work spreads over the
    cores. (On a GPU the maps are made on the device, so this is not the GPU path's ceiling.)"""
    with tempfile.TemporaryDirectory() as scratch:
        copy = package.copy_to(Path(scratch) / package.card.name)
        for unused in (copy.weights_path, copy.trunk_onnx_path, copy.head_onnx_path):  # served from model.onnx
            unused.unlink(missing_ok=True)                                              # alone, not made from them
        write_pointwise_network(copy.onnx_path, package.card.in_channels, package.card.num_classes)
        with ServerProcess(Path(scratch)) as server:
            address = server.address
            return interleaved(server, [
                Spec(f"host only (1x1 conv), Predict concurrency {concurrency}",
                     lambda: unary(address, payloads, concurrency, connections=4), "the network's cost removed"),
                Spec(f"host only (1x1 conv), PredictStream, window {concurrency}",
                     lambda: stream(address, payloads, concurrency), "the network's cost removed"),
                Spec(f"host only (1x1 conv), stream {concurrency}, raw in and out",
                     lambda: stream(address, images, concurrency, **RAW_IO), RAW_IO_NOTE),
            ], reference, repeats)


def write_pointwise_network(path: Path, in_channels: int, classes: int) -> None:
    """An ONNX graph with the served model's inputs and outputs (logits at the input's size, and
    the embedding): a 1x1 convolution at a quarter of the resolution, upsampled bilinearly as
    DeepLabV3+ does, so that the maps are as smooth (and compress as well) as a real model's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from prelabel_models.backends.onnx_backend import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME

    weights = np.random.default_rng(0).standard_normal((classes, in_channels, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("AveragePool", [INPUT_NAME], ["quarter"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Conv", ["quarter", "weights"], ["coarse"]),
         helper.make_node("Resize", ["coarse", "", "scales"], [OUTPUT_NAME], mode="linear"),
         helper.make_node("ReduceMean", [OUTPUT_NAME], [EMBEDDING_NAME], axes=[2, 3], keepdims=0)],
        "pointwise", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", in_channels, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes, "height", "width"]),
         helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(weights, "weights"),
         numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # readable by ONNX Runtime 1.18 and later
    onnx.save(model, str(path))


def check_targets(rows: dict[str, Row]) -> list[dict]:
    """Issue #4's targets, worked out from this run's rows."""
    raw_p50 = rows[PAIRED_RAW_BATCH_1].p50_ms  # measured in the same rounds as concurrency 1, just before it
    c1, c16 = rows["prelabel Predict, concurrency 1"], rows["prelabel Predict, concurrency 16"]
    stream = rows["prelabel PredictStream, window 16"]
    mask_only, entropy = rows["Predict concurrency 4, mask only"], rows["Predict concurrency 4, mask + entropy"]
    batching_on, batching_off = c16, rows["batching off, Predict concurrency 16"]
    photo = rows["4000x3000 photo (tiled), Predict"]
    entropy_cost = float(np.median(paired_gains(mask_only, entropy))) - 1  # mask-only throughput over entropy's
    batching_gains = paired_gains(batching_on, batching_off)
    return [
        {"target": "PredictStream >= 95 % of the limit", "measured": stream.ratio_text,
         "met": stream.ratio_to_limit >= 0.95},
        {"target": "unary at concurrency 16 >= 90 % of the limit", "measured": c16.ratio_text,
         "met": c16.ratio_to_limit >= 0.90},
        {"target": f"p50 at concurrency 1 <= 1.1 x raw batch-1 p50 + 5 ms = {1.1 * raw_p50 + 5:.0f} ms",
         "measured": f"{c1.p50_ms:.0f} ms", "met": c1.p50_ms <= 1.1 * raw_p50 + 5},
        {"target": "entropy map and summary <= 10 % over mask only", "measured": f"{entropy_cost:+.1%}",
         "met": entropy_cost <= 0.10},
        {"target": "4000x3000 photo: peak server RSS < 1.5 GB",
         "measured": f"{photo.server_peak_rss_mb:.0f} MB ({photo.server_rss_after_mb:.0f} MB kept after)",
         "met": photo.server_peak_rss_mb < 1500},
        {"target": "batching on beats batching off at concurrency 16",
         "measured": f"{paired_gain_text(batching_gains)}; {batching_on.images_per_s:.2f} vs {batching_off.images_per_s:.2f} img/s",
         "met": float(np.median(batching_gains)) > 1},
    ]


def paired_gains(row: Row, baseline: Row) -> np.ndarray:
    """``row``'s throughput over ``baseline``'s in each round (both measured back to back in it, so
    the machine's drift between rounds cancels)."""
    return np.divide(row.round_ratios, baseline.round_ratios)


def paired_gain_text(gains: np.ndarray) -> str:
    return f"{np.median(gains):.3f}x by paired rounds ({gains.min():.3f}x to {gains.max():.3f}x)"


def check_cuda_targets(rows: dict[str, Row]) -> list[dict]:
    """The same throughput targets against the GPU's limit, and what batching buys there."""
    c16, stream = rows["cuda: prelabel Predict, concurrency 16"], rows["cuda: prelabel PredictStream, window 64"]
    verdicts = [
        {"target": "cuda: PredictStream >= 95 % of the GPU limit", "measured": stream.ratio_text,
         "met": stream.ratio_to_limit >= 0.95},
        {"target": "cuda: unary at concurrency 16 >= 90 % of the GPU limit", "measured": c16.ratio_text,
         "met": c16.ratio_to_limit >= 0.90},
    ]
    for c in (16, 64):
        on, off = rows[f"cuda: prelabel Predict, concurrency {c}"], rows[f"cuda: batching off, Predict concurrency {c}"]
        gains = paired_gains(on, off)
        verdicts.append({"target": f"cuda: batching on beats batching off at concurrency {c}",
                         "measured": f"{paired_gain_text(gains)}; {on.images_per_s:.1f} vs {off.images_per_s:.1f} img/s",
                         "met": float(np.median(gains)) > 1})
    on_device, on_host = rows["cuda: prelabel Predict, concurrency 64"], rows["cuda: maps on the host, Predict conc. 64"]
    gains = paired_gains(on_device, on_host)
    verdicts.append({"target": "cuda: maps on the GPU beat maps on the host at concurrency 64 (a design check)",
                     "measured": f"{paired_gain_text(gains)}; {on_device.images_per_s:.1f} vs {on_host.images_per_s:.1f} img/s",
                     "met": float(np.median(gains)) > 1})
    eager = rows["cuda: CUDA graphs off, Predict conc. 64"]
    gains = paired_gains(on_device, eager)
    verdicts.append({"target": "cuda: CUDA graphs beat layer-by-layer launches at concurrency 64 (a design check)",
                     "measured": f"{paired_gain_text(gains)}; {on_device.images_per_s:.1f} vs {eager.images_per_s:.1f} img/s",
                     "met": float(np.median(gains)) > 1})
    return verdicts


def print_table(rows: list[Row]) -> None:
    header = (f"{'configuration':<42} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'/limit':>7} "
              f"{'srv CPU':>8} {'srv RSS MB':>10} {'this CPU':>8} {'CPU ms/img':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.name:<42} {r.images_per_s:7.2f} {r.p50_ms:8.1f} {r.p95_ms:8.1f} {r.p99_ms:8.1f} "
              f"{r.ratio_to_limit:7.1%} {r.server_cpu_cores:8.2f} {r.server_peak_rss_mb:10.0f} {r.client_cpu_cores:8.2f} {r.cpu_ms_per_image:10.0f}")


STAGES = ("decode", "queue", "inference", "postprocess", "total", "outside server")


def print_stages(rows: list[Row]) -> None:
    """Where a served request's time goes, from the timings each response carries: the server's
    stages (queue is part of inference), its total, and the rest of the round trip (gRPC, the
    network and the client; unary calls only)."""
    served = [r for r in rows if r.stages_ms]
    header = f"{'median ms per request':<42}" + "".join(f"{stage:>15}" for stage in STAGES)
    print(header)
    print("-" * len(header))
    for r in served:
        print(f"{r.name:<42}" + "".join(f"{r.stages_ms[stage]:15.1f}" if stage in r.stages_ms else f"{'':>15}"
                                        for stage in STAGES))


if __name__ == "__main__":
    main()
