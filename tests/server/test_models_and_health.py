"""Health (overall and per model), reflection, ListModels and GetModel, on both backends; a
failed package is reported with its error and the others keep serving."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from prelabel_client import ModelNotFound, PreLabelClient
from prelabel_proto.errors import FailedPrecondition
from prelabel_proto import SERVICE_NAME
from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_server.grpc_api.server import RunningServer
from service_packages import CAMVID_CLASSES
from service_support import DEFAULT_MODEL, FAILED_MODELS, READY_MODELS

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def channel(server: RunningServer):
    with grpc.insecure_channel(server.address) as opened:
        yield opened


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health(channel: grpc.Channel, service: str) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


class TestHealthAndReflection:
    def test_server_and_service_are_serving(self, channel: grpc.Channel) -> None:
        assert _health(channel, "") == SERVING
        assert _health(channel, SERVICE_NAME) == SERVING

    @pytest.mark.parametrize("model", READY_MODELS)
    def test_each_loaded_model_is_serving(self, channel: grpc.Channel, model: str) -> None:
        assert _health(channel, f"models/{model}") == SERVING

    @pytest.mark.parametrize("model", FAILED_MODELS)
    def test_a_failed_model_is_not_serving(self, channel: grpc.Channel, model: str) -> None:
        assert _health(channel, f"models/{model}") == NOT_SERVING

    def test_an_unknown_model_is_not_found_by_health(self, channel: grpc.Channel) -> None:
        with pytest.raises(grpc.RpcError) as raised:
            _health(channel, "models/no-such-model")
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    def test_reflection_lists_and_describes_the_service(self, channel: grpc.Channel) -> None:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= set(database.get_services())
        service = DescriptorPool(database).FindServiceByName(SERVICE_NAME)
        assert {"Predict", "PredictStream", "ListModels", "GetModel"} <= {m.name for m in service.methods}
        stream = service.methods_by_name["PredictStream"]
        assert stream.client_streaming and stream.server_streaming


class TestModels:
    def test_list_models_describes_every_package(self, client: PreLabelClient, server: RunningServer) -> None:
        models = {m.name: m for m in client.models()}
        assert list(models) == sorted(READY_MODELS + FAILED_MODELS)
        backend = server.engine.settings.backend
        for name in READY_MODELS:
            info = models[name]
            assert (info.state, info.backend, info.device, info.error) == ("ready", backend, "cpu", "")
            assert info.version == "1" and info.is_default == (name == DEFAULT_MODEL)
            assert info.classes == [(i, n, c) for i, (n, c) in enumerate(CAMVID_CLASSES)]
            assert info.message.ignore_index == 11 and info.message.temperature == 1.0
        assert (models["deeplab"].architecture, models["deeplab"].encoder) == ("DeepLabV3Plus", "resnet18")
        assert (models["unet"].architecture, models["unet"].encoder) == ("Unet", "mobilenet_v2")

    def test_list_models_names_the_default(self, channel: grpc.Channel) -> None:
        response = pb_grpc.PrelabelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
        assert response.default_model == DEFAULT_MODEL

    def test_input_spec_says_how_images_are_fitted(self, client: PreLabelClient, server: RunningServer) -> None:
        spec = client.model("deeplab").message.input
        assert (spec.channels, spec.size_multiple, spec.tile_size, spec.tile_overlap) == (3, 16, 256, 32)
        assert list(spec.mean) == pytest.approx([0.485, 0.456, 0.406])
        assert list(spec.std) == pytest.approx([0.229, 0.224, 0.225])
        assert spec.max_pixels == server.engine.settings.max_image_pixels
        assert client.model("unet-tile1024").message.input.tile_size == 1024

    def test_failed_packages_are_listed_with_their_error(self, client: PreLabelClient, server: RunningServer) -> None:
        models = {m.name: m for m in client.models()}
        missing = "missing.onnx" if server.engine.settings.backend == "onnx" else "missing.safetensors"
        broken = models["broken"]
        assert (broken.state, broken.backend, broken.is_default) == ("failed", "", False)
        assert missing in broken.error
        assert broken.architecture == "Unet" and len(broken.classes) == 11  # its card was readable
        bad_card = models["broken-card"]
        assert bad_card.state == "failed" and "card.json is invalid" in bad_card.error
        assert bad_card.classes == [] and bad_card.architecture == ""

    def test_get_model_describes_one_model_or_the_default(self, client: PreLabelClient) -> None:
        assert client.model("unet").name == "unet"
        default = client.model()
        assert default.name == DEFAULT_MODEL and default.is_default

    def test_get_model_of_an_unknown_name_is_not_found(self, client: PreLabelClient) -> None:
        with pytest.raises(ModelNotFound, match="no-such-model") as raised:
            client.model("no-such-model")
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
        assert "deeplab" in raised.value.message  # it lists the models that do exist

    def test_predict_on_a_failed_model_is_unavailable_and_says_why(self, client: PreLabelClient, server: RunningServer,
                                                                   small_camvid_png: bytes) -> None:
        with pytest.raises(FailedPrecondition, match="failed") as raised:
            client.predict(small_camvid_png, model="broken")
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "missing" in raised.value.message
        assert client.predict(small_camvid_png).ok  # the others keep serving


class _HeldRuns:
    """The real backend, whose forward passes wait for ``release``: the calls that reach it hold
    their RPC threads, as large images do."""

    def __init__(self, backend) -> None:
        self.backend, self.release, self.waiting = backend, threading.Event(), threading.Semaphore(0)
        self.name, self.device = backend.name, backend.device

    def run(self, batch):
        self.waiting.release()
        self.release.wait(60)
        return self.backend.run(batch)


def test_the_health_port_answers_while_every_rpc_thread_is_busy(start_extra_server, small_camvid_png: bytes) -> None:
    """On the main port, health shares the RPC threads with Predict: with every one held by a large
    call, it timed out for minutes, and a Kubernetes liveness probe would restart a busy server."""
    running = start_extra_server(workers=2, max_open_streams=1, batching=False, health_port=_free_port())
    served = running.engine.registry.get(DEFAULT_MODEL)
    held = served.predictor.backend = _HeldRuns(served.predictor.backend)
    try:
        with PreLabelClient(running.address, timeout=60) as client, ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(client.predict, small_camvid_png) for _ in range(2)]
            assert held.waiting.acquire(timeout=30) and held.waiting.acquire(timeout=30)  # both threads held
            with grpc.insecure_channel(running.address) as main:
                with pytest.raises(grpc.RpcError) as starved:
                    health_pb2_grpc.HealthStub(main).Check(health_pb2.HealthCheckRequest(), timeout=1)
                assert starved.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            with grpc.insecure_channel(f"127.0.0.1:{running.probes.port}") as probes:
                for service in ("", SERVICE_NAME, f"models/{DEFAULT_MODEL}"):
                    assert _health(probes, service) == SERVING
                assert _health(probes, "models/broken") == NOT_SERVING
            held.release.set()
            assert all(call.result().ok for call in calls)
    finally:
        held.release.set()


def test_a_health_port_in_use_is_a_startup_error(start_extra_server) -> None:
    """gRPC's default (SO_REUSEPORT on) let a second server share the health port and answer half
    the probes in the first one's place."""
    first = start_extra_server(health_port=_free_port())
    with pytest.raises(OSError, match="cannot serve health on .*PRELABEL_HEALTH_PORT"):
        start_extra_server(health_port=first.probes.port)
