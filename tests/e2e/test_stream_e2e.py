"""PredictStream end to end: 50 CamVid images through ``predict_many``, ids on the raw stream, and
a bad item that fails alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from prelabel_client import FailedPrediction, InvalidInput, PreLabelClient
from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_server.grpc_api.server import RunningServer
from service_support import NUM_CLASSES, encode, read_rgb

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _half_size_crops(paths: list[Path]) -> list[bytes]:
    """Image ``i`` at half size (240x180, cheap on a CPU), cropped to height 180 - i: every
    result's size names the input it came from."""
    return [encode(cv2.resize(read_rgb(path), (240, 180), interpolation=cv2.INTER_AREA)[: 180 - i])
            for i, path in enumerate(paths)]


def test_fifty_camvid_images_come_back_in_input_order(onnx_client: PreLabelClient, camvid_val_images: list[Path]) -> None:
    images = _half_size_crops(camvid_val_images[:50])
    results = list(onnx_client.predict_many(images, window=8))
    assert len(results) == 50
    for i, result in enumerate(results):
        assert result.ok, result
        assert result.mask.shape == result.uncertainty.shape == (180 - i, 240), f"item {i} is out of order"
        assert result.mask.max() < NUM_CLASSES
        assert 0 <= result.uncertainty.min() and result.uncertainty.max() <= 1


def test_raw_stream_echoes_each_request_id(onnx_server: RunningServer, camvid_val_images: list[Path]) -> None:
    sizes = {f"frame-{name}": (97 + 13 * k, 120 + 7 * k) for k, name in enumerate("abcdef")}
    image = read_rgb(camvid_val_images[5])
    requests = [pb.PredictStreamRequest(id=id_, request=pb.PredictRequest(image=pb.Image(encoded=encode(image[:h, :w]))))
                for id_, (h, w) in sizes.items()]
    with grpc.insecure_channel(onnx_server.address) as channel:
        responses = list(pb_grpc.PrelabelServiceStub(channel).PredictStream(iter(requests), timeout=120))
    assert sorted(r.id for r in responses) == sorted(sizes)
    for response in responses:
        assert response.WhichOneof("outcome") == "response", response.error
        assert (response.response.height, response.response.width) == sizes[response.id]


def test_a_bad_item_fails_alone_and_the_stream_goes_on(onnx_client: PreLabelClient, small_camvid_png: bytes) -> None:
    images = [small_camvid_png, small_camvid_png, b"not an image at all", small_camvid_png, small_camvid_png]
    results = list(onnx_client.predict_many(images, raise_on_error=False))
    assert [r.ok for r in results] == [True, True, False, True, True]
    failed = results[2]
    assert isinstance(failed, FailedPrediction) and isinstance(failed.error, InvalidInput)
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT and "not a readable image" in failed.error.message
    for result in results[:2] + results[3:]:
        assert result.mask.shape == (101, 133)
        np.testing.assert_array_equal(result.mask, results[0].mask)


def test_a_bad_item_raises_at_its_position_by_default(onnx_client: PreLabelClient, small_camvid_png: bytes) -> None:
    received = []
    with pytest.raises(InvalidInput, match="empty"):
        for result in onnx_client.predict_many([small_camvid_png, b"", small_camvid_png]):
            received.append(result)
    assert len(received) == 1 and received[0].ok


def test_each_item_gets_its_own_status_code(onnx_server: RunningServer, small_camvid_png: bytes) -> None:
    good = pb.PredictRequest(image=pb.Image(encoded=small_camvid_png))
    items = {
        "good": good,
        "unknown-model": pb.PredictRequest(model="no-such-model", image=pb.Image(encoded=small_camvid_png)),
        "failed-model": pb.PredictRequest(model="broken", image=pb.Image(encoded=small_camvid_png)),
        "bad-raw": pb.PredictRequest(image=pb.Image(raw=pb.RawImage(data=b"\0" * 10, height=4, width=4, channels=3))),
        "bad-option": pb.PredictRequest(image=pb.Image(encoded=small_camvid_png), uncertainty_measure=99),
    }
    requests = [pb.PredictStreamRequest(id=id_, request=request) for id_, request in items.items()]
    with grpc.insecure_channel(onnx_server.address) as channel:
        responses = {r.id: r for r in pb_grpc.PrelabelServiceStub(channel).PredictStream(iter(requests), timeout=120)}
    assert responses["good"].WhichOneof("outcome") == "response"
    codes = {id_: _CODE_NAMES[r.error.code] for id_, r in responses.items() if id_ != "good"}
    assert codes == {"unknown-model": "NOT_FOUND", "failed-model": "FAILED_PRECONDITION", "bad-raw": "INVALID_ARGUMENT",
                     "bad-option": "INVALID_ARGUMENT"}
    assert all(responses[id_].error.message for id_ in codes)
