"""Health (overall and per model), reflection, ListModels and GetModel, on both backends; a
failed package is reported with its error and the others keep serving."""

from __future__ import annotations

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
