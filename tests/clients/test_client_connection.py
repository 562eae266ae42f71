"""How the client talks to the server: bearer-token auth (health and reflection stay open),
deadlines, and retries on UNAVAILABLE only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from prelabel_client import InvalidInput, ModelUnavailable, PreLabelClient
from prelabel_proto import SERVICE_NAME
from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_proto.errors import DeadlineExceeded, FailedPrecondition, Unauthenticated
from prelabel_server.grpc_api.server import RunningServer

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secured(start_extra_server) -> RunningServer:
    return start_extra_server(auth_token=TOKEN)


@pytest.fixture
def anonymous(secured: RunningServer) -> Iterator[PreLabelClient]:
    with PreLabelClient(secured.address, timeout=60) as client:
        yield client


class TestTokenAuth:
    def test_calls_without_a_token_are_unauthenticated(self, anonymous: PreLabelClient, small_camvid_png: bytes) -> None:
        with pytest.raises(Unauthenticated, match="bearer token") as raised:
            anonymous.models()
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(Unauthenticated):
            anonymous.predict(small_camvid_png)
        with pytest.raises(Unauthenticated):
            list(anonymous.predict_many([small_camvid_png]))

    def test_a_wrong_token_is_unauthenticated(self, secured: RunningServer, small_camvid_png: bytes) -> None:
        with PreLabelClient(secured.address, token="not-" + TOKEN) as client, \
                pytest.raises(Unauthenticated, match="--token or PRELABEL_TOKEN"):  # what a CLI user sets
            client.predict(small_camvid_png)

    def test_the_token_opens_every_call(self, secured: RunningServer, small_camvid_png: bytes) -> None:
        with PreLabelClient(secured.address, token=TOKEN, timeout=120) as client:
            assert client.predict(small_camvid_png).mask.shape == (101, 133)
            assert [r.ok for r in client.predict_many([small_camvid_png] * 2)] == [True, True]
            assert client.model().name == "deeplab"

    @pytest.mark.parametrize("header,served", [(f"bearer {TOKEN}", True), (f"BEARER {TOKEN}", True),
                                               (f"Basic {TOKEN}", False), (TOKEN, False), (f"Bearer  {TOKEN}", False)])
    def test_the_scheme_is_case_insensitive_and_the_token_exact(self, secured: RunningServer, header: str,
                                                                served: bool) -> None:
        """Gateways and SDKs that send ``bearer`` were refused (RFC 7235: the scheme is
        case-insensitive)."""
        with grpc.insecure_channel(secured.address) as channel:
            stub = pb_grpc.PrelabelServiceStub(channel)
            try:
                stub.ListModels(pb.ListModelsRequest(), metadata=[("authorization", header)], timeout=30)
            except grpc.RpcError as exc:
                assert not served and exc.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                assert served

    def test_health_and_reflection_stay_open(self, secured: RunningServer) -> None:
        with grpc.insecure_channel(secured.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert SERVICE_NAME in ProtoReflectionDescriptorDatabase(channel).get_services()


def _requests(model: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("prelabel_requests_total", {"model": model, "outcome": outcome}) or 0.0


def test_requests_refused_for_their_options_are_counted(onnx_server: RunningServer, onnx_client: PreLabelClient,
                                                        small_camvid_png: bytes) -> None:
    """Validation ran before the count: a request refused for its options was not in the metric."""
    before = _requests("deeplab", "invalid_argument")
    with pytest.raises(InvalidInput, match="uncertainty_threshold"):
        onnx_client.predict(small_camvid_png, model="deeplab", uncertainty_threshold=1.5)
    unknown_enum = onnx_client.request(small_camvid_png, model="deeplab")
    unknown_enum.mask_format = 99  # refused while the servicer converts it, before the engine
    with grpc.insecure_channel(onnx_server.address) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.PrelabelServiceStub(channel).Predict(unknown_enum, timeout=60)
    assert _requests("deeplab", "invalid_argument") == before + 2


class TestDeadlinesAndRetries:
    def test_a_passed_deadline_raises_and_the_server_keeps_serving(self, onnx_client: PreLabelClient,
                                                                   camvid_val_images, small_camvid_png: bytes) -> None:
        with pytest.raises(DeadlineExceeded, match="timeout of 0.001 s: raise it") as raised:
            onnx_client.predict(camvid_val_images[0], timeout=0.001)
        assert "tiled" in raised.value.message  # gRPC's own text was "Deadline Exceeded" alone
        assert onnx_client.predict(small_camvid_png).ok

    def test_permanent_errors_are_not_retried(self, onnx_server: RunningServer, small_camvid_png: bytes) -> None:
        """Counted by the server's own request metric (the test server runs in this process)."""
        with PreLabelClient(onnx_server.address, retries=2, timeout=60) as client:
            before = _requests("broken", "failed_precondition"), _requests("unet", "invalid_argument")
            with pytest.raises(FailedPrecondition):
                client.predict(small_camvid_png, model="broken")  # failed to load: permanent until reloaded
            with pytest.raises(InvalidInput):
                client.predict(b"not an image", model="unet")
            after = _requests("broken", "failed_precondition"), _requests("unet", "invalid_argument")
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)

    def test_unavailable_is_retried_with_back_off(self) -> None:
        """Nothing listens on the port: each attempt fails at once with UNAVAILABLE, so the time a
        call takes is the retry policy's back-off (0.2 + 0.4 + 0.8 s, jittered by at most 20 %)."""
        durations = {}
        for retries in (0, 3):
            with PreLabelClient(f"127.0.0.1:{_closed_port()}", retries=retries, timeout=30) as client:
                started = time.perf_counter()
                with pytest.raises(ModelUnavailable):
                    client.models()
                durations[retries] = time.perf_counter() - started
        assert durations[3] >= 1.0 > durations[0], durations

    def test_a_request_larger_than_grpcs_retry_buffer_is_retried_too(self, camvid_val_images) -> None:
        """gRPC retries only a request that fits its retry buffer, 256 KiB by default: a CamVid PNG
        (about 280 KB) failed at once with no retry."""
        image = max(camvid_val_images[:8], key=lambda path: path.stat().st_size)
        assert image.stat().st_size > 256 * 1024
        with PreLabelClient(f"127.0.0.1:{_closed_port()}", retries=3, timeout=30) as client:
            started = time.perf_counter()
            with pytest.raises(ModelUnavailable):
                client.predict(image)
            assert time.perf_counter() - started >= 1.0  # the back-off of three retries, as above

    def test_no_server_is_unavailable(self) -> None:
        with PreLabelClient("127.0.0.1:1", retries=0, timeout=10) as client, pytest.raises(ModelUnavailable):
            client.models()

    def test_waiting_for_no_server_says_where_it_waited(self) -> None:
        """``wait_ready`` raised grpc's bare FutureTimeoutError(), which no PrelabelError handler catches."""
        address = f"127.0.0.1:{_closed_port()}"
        with PreLabelClient(address) as client, pytest.raises(ModelUnavailable, match=f"no server answered at {address}"):
            client.wait_ready(0.5)


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_stream_gives_up_on_a_server_that_stopped_answering(model_repository: Path,
                                                             camvid_val_images: list[Path]) -> None:
    """The client's timeout did not reach streams: `prelabel predict --timeout 3` waited for as long
    as the server was stopped (SIGSTOP). With stream_idle_timeout the stream fails with
    DEADLINE_EXCEEDED once nothing has come back for that long."""
    server = subprocess.Popen([sys.executable, "-m", "prelabel_client.cli", "serve"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PRELABEL_PORT": "0", "PRELABEL_BACKEND": "onnx",
                                   "PRELABEL_MODEL_REPOSITORY": str(model_repository)})
    outcome: list[object] = []
    try:
        address = next(line for line in server.stdout if "serving on" in line).split()[3]

        def consume() -> None:
            with PreLabelClient(address, stream_idle_timeout=3, timeout=60) as client:
                try:
                    for index, _ in enumerate(client.predict_many(camvid_val_images[:16], window=4, model="deeplab")):
                        if index == 0:
                            os.kill(server.pid, signal.SIGSTOP)
                        outcome.append(index)
                except DeadlineExceeded as exc:
                    outcome.append(exc)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        consumer.join(timeout=120)
        assert not consumer.is_alive(), "the stream still waits on the stopped server"
        assert isinstance(outcome[-1], DeadlineExceeded) and "stream_idle_timeout" in outcome[-1].message
        assert len(outcome) < 16
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(60)


def test_results_behind_an_image_slower_than_the_idle_limit_are_kept(start_extra_server, small_camvid_png: bytes,
                                                                     camvid_val_images: list[Path]) -> None:
    """A large image tiled for longer than stream_idle_timeout ended the stream, and the results of
    the small images after it, already received, were thrown away with it ("not processed")."""
    import cv2

    from prelabel_client import FailedPrediction, Prediction

    server = start_extra_server()
    photo = cv2.resize(cv2.imread(str(camvid_val_images[0])), (4000, 3000))  # about 250 tiles of 256: a minute
    large = cv2.imencode(".jpg", photo)[1].tobytes()
    outcome: list[object] = []
    with PreLabelClient(server.address, stream_idle_timeout=5, timeout=60) as client:
        with pytest.raises(DeadlineExceeded, match="raise the client's stream_idle_timeout"):
            for result in client.predict_many([large, small_camvid_png, small_camvid_png], raise_on_error=False,
                                              model="deeplab"):
                outcome.append(result)
    # a loaded machine may not answer the last small image in time: it is then not processed, like any in flight
    assert len(outcome) >= 2
    assert isinstance(outcome[0], FailedPrediction) and isinstance(outcome[0].error, DeadlineExceeded)
    assert not outcome[0].answered
    assert all(isinstance(result, Prediction) and result.mask.shape == (101, 133) for result in outcome[1:])
