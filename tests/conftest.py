"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.server import RunningServer, start_server
from prelabel_server.settings import ServerSettings
from service_support import encode, read_rgb

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The shared CamVid copy (``../shared/data/camvid`` from the repository root); read, never copied."""
    root = (REPO_ROOT / ".." / "shared" / "data" / "camvid").resolve()
    if not (root / "val").is_dir():
        pytest.skip(f"CamVid is not at {root}")
    return root


# --- The real server: a model repository of small random packages, served on loopback ----------

@pytest.fixture(scope="session")
def camvid_val_images(camvid_root: Path) -> list[Path]:
    return sorted((camvid_root / "val").glob("*.png"))


@pytest.fixture(scope="session")
def small_camvid_rgb(camvid_val_images: list[Path]) -> np.ndarray:
    """A real CamVid frame shrunk to 133x101 (odd sides, so padding is exercised): cheap to segment."""
    return cv2.resize(read_rgb(camvid_val_images[3]), (133, 101), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def small_camvid_png(small_camvid_rgb: np.ndarray) -> bytes:
    return encode(small_camvid_rgb)


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory, camvid_root: Path) -> Path:
    """``deeplab`` (DeepLabV3+/ResNet-18, stride 16, 256-pixel tiles), ``unet`` (local Unet/
    MobileNetV2, 256-pixel tiles) and ``unet-tile1024`` (the same weights, 1024-pixel tiles), all
    exported to ONNX; ``broken`` (weights and ONNX missing) and ``broken-card`` (invalid card)."""
    from service_packages import build_package, camvid_card, write_broken_packages

    repository = tmp_path_factory.mktemp("model-repository")
    calibration = sorted((camvid_root / "train").glob("*.png"))[::90][:4]
    build_package(repository / "deeplab", camvid_card("deeplab", "DeepLabV3Plus", "resnet18", output_stride=16,
                                                      tile_size=256, tile_overlap=32), calibration)
    unet = build_package(repository / "unet", camvid_card("unet", "Unet", "mobilenet_v2", tile_size=256,
                                                          tile_overlap=64), calibration, local=True)
    unet.copy_to(repository / "unet-tile1024", name="unet-tile1024", tile_size=1024)
    write_broken_packages(repository)
    return repository


def _serve(repository: Path, **settings: object) -> Iterator[RunningServer]:
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=repository, **settings))
    try:
        yield running
    finally:
        running.stop(grace=0)


@pytest.fixture(scope="session")
def onnx_server(model_repository: Path) -> Iterator[RunningServer]:
    yield from _serve(model_repository, backend="onnx")


@pytest.fixture(scope="session")
def torch_server(model_repository: Path) -> Iterator[RunningServer]:
    yield from _serve(model_repository, backend="torch", device="cpu")


@pytest.fixture(scope="session", params=["onnx", "torch"])
def server(request: pytest.FixtureRequest) -> RunningServer:
    """Each backend's server in turn: tests using it run once per backend."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def client(server: RunningServer) -> Iterator[PreLabelClient]:
    with PreLabelClient(server.address, timeout=300) as connected:
        yield connected


@pytest.fixture(scope="session")
def onnx_client(onnx_server: RunningServer) -> Iterator[PreLabelClient]:
    with PreLabelClient(onnx_server.address, timeout=300) as connected:
        yield connected


@pytest.fixture(scope="module")
def start_extra_server(model_repository: Path) -> Iterator[Callable[..., RunningServer]]:
    """Starts more ONNX servers on the test repository (e.g. with limits or a token) for one test
    module; stops them when it ends."""
    started: list[RunningServer] = []

    def start(**settings: object) -> RunningServer:
        started.append(start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository,
                                                   backend="onnx", **settings)))
        return started[-1]

    yield start
    for running in started:
        running.stop(grace=0)
