"""Every bad input gets its status code and a message that helps, and the server keeps serving:
each case is followed by a good request on the same connection."""

from __future__ import annotations

import io
import json
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from prelabel_client import PreLabelClient, ResourceExhausted
from prelabel_client.batch import predict_files
from prelabel_client.cli import main as prelabel_main
from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_server.grpc_api.server import RunningServer
from service_support import encode, read_rgb

INVALID, NOT_FOUND, EXHAUSTED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                 grpc.StatusCode.RESOURCE_EXHAUSTED)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A structurally valid PNG (correct CRCs) whose header claims ``width`` x ``height`` RGB
    pixels but which carries only a few compressed bytes: a decompression bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _chunk(b"IEND", b""))


def _flip_middle_byte(data: bytes) -> bytes:
    """Corrupts one byte of the pixel data: the chunk's CRC no longer matches."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _png_without_image_data() -> bytes:
    """A PNG with a valid signature, IHDR and IEND (every CRC right) but no IDAT: Pillow's verify()
    raised an IndexError on it, which reached the caller as INTERNAL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40, 24, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="GIF")
    return buffer.getvalue()


def _tiff(png: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, format="TIFF", compression="tiff_lzw")
    return buffer.getvalue()


def _request(image: pb.Image | bytes, **fields: object) -> pb.PredictRequest:
    return pb.PredictRequest(image=pb.Image(encoded=image) if isinstance(image, bytes) else image, **fields)


def _raw(data: bytes, height: int, width: int, channels: int) -> pb.Image:
    return pb.Image(raw=pb.RawImage(data=data, height=height, width=width, channels=channels))


# name -> (request builder given a good PNG, expected code, fragments the message must contain)
CASES: dict[str, tuple[Callable[[bytes], pb.PredictRequest], grpc.StatusCode, tuple[str, ...]]] = {
    "corrupt-bytes": (lambda png: _request(b"\x00garbage, not an image" * 20), INVALID, ("not a readable image", "PNG")),
    "truncated-png": (lambda png: _request(png[: len(png) // 2]), INVALID, ("truncated",)),
    "png-with-flipped-byte": (lambda png: _request(_flip_middle_byte(png)), INVALID, ("corrupt",)),
    "png-without-image-data": (lambda png: _request(_png_without_image_data()), INVALID, ("corrupt", "re-encode")),
    # Pillow cannot even identify a TIFF whose directory is cut short: it was told to "send ... TIFF"
    "truncated-lzw-tiff": (lambda png: _request(_tiff(png)[:40]), INVALID, ("starts as a TIFF", "truncated")),
    "truncated-jpeg": (lambda png: _request(encode(cv2.imdecode(np.frombuffer(png, np.uint8), 1), ".jpg")[:-200]),
                       INVALID, ("truncated",)),
    "empty-image": (lambda png: _request(b""), INVALID, ("empty",)),
    "no-image-set": (lambda png: pb.PredictRequest(), INVALID, ("empty",)),
    "unsupported-format": (lambda png: _request(_gif()), INVALID, ("GIF", "not supported", "PNG")),
    "header-claims-100000x100000": (lambda png: _request(png_claiming(100_000, 100_000)), EXHAUSTED,
                                    ("100000x100000", "10000000000 pixels", "limit of 40000000")),
    "raw-wrong-byte-count": (lambda png: pb.PredictRequest(image=_raw(b"\0" * 100, 10, 10, 3)), INVALID,
                             ("100 bytes", "needs 300 bytes")),
    "raw-two-channels": (lambda png: pb.PredictRequest(image=_raw(b"\0" * 200, 10, 10, 2)), INVALID, ("2 channels",)),
    "raw-thin-strip-over-side-limit": (lambda png: pb.PredictRequest(image=_raw(b"\0" * 90_000, 1, 30_000, 3)),
                                       EXHAUSTED, ("30000x1", "longer side", "PRELABEL_MAX_IMAGE_SIDE")),
    "raw-zero-height": (lambda png: pb.PredictRequest(image=_raw(b"", 0, 10, 3)), INVALID, ("at least one pixel",)),
    "raw-over-pixel-limit": (lambda png: pb.PredictRequest(image=_raw(b"", 10_000, 5_000, 1)), EXHAUSTED,
                             ("50000000 pixels", "limit")),
    "unknown-model": (lambda png: _request(png, model="no-such-model"), NOT_FOUND, ("no-such-model", "deeplab")),
    "unknown-version": (lambda png: _request(png, model="deeplab", model_version="7"), NOT_FOUND, ("'7'", "'1'")),
    "unknown-measure": (lambda png: _request(png, uncertainty_measure=99), INVALID,
                        ("uncertainty_measure", "99", "UNCERTAINTY_MEASURE_MARGIN")),
    "unknown-mask-format": (lambda png: _request(png, mask_format=99), INVALID, ("mask_format", "99")),
    "unspecified-output": (lambda png: _request(png, outputs=[pb.OUTPUT_MASK, pb.OUTPUT_UNSPECIFIED]), INVALID,
                           ("OUTPUT_UNSPECIFIED", "names no output", "leave the list empty")),
    "unknown-output": (lambda png: _request(png, outputs=[pb.OUTPUT_MASK, 42]), INVALID, ("outputs", "42")),
    "format-not-for-masks": (lambda png: _request(png, mask_format=pb.ARRAY_FORMAT_RAW_FLOAT16), INVALID,
                             ("ARRAY_FORMAT_RAW_FLOAT16", "mask", "ARRAY_FORMAT_PNG_UINT8")),
    "threshold-out-of-range": (lambda png: _request(png, uncertainty_threshold=1.5), INVALID, ("(0, 1)", "1.5")),
    # an unknown format lists the formats of that output alone, not all four
    "unknown-mask-format": (lambda png: _request(png, mask_format=42), INVALID,
                            ("mask_format = 42", "['ARRAY_FORMAT_PNG_UINT8', 'ARRAY_FORMAT_RAW_UINT8']")),
    "unknown-uncertainty-format": (lambda png: _request(png, uncertainty_format=42), INVALID,
                                   ("['ARRAY_FORMAT_PNG_UINT8', 'ARRAY_FORMAT_PNG_UINT16', 'ARRAY_FORMAT_RAW_FLOAT16']",)),
}


@pytest.fixture(scope="module")
def stub(onnx_server: RunningServer):
    with grpc.insecure_channel(onnx_server.address) as channel:
        yield pb_grpc.PrelabelServiceStub(channel)


def _assert_refused(stub, request: pb.PredictRequest, code: grpc.StatusCode, fragments: tuple[str, ...]) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=60)
    assert raised.value.code() == code, raised.value.details()
    details = raised.value.details()
    assert details and "Traceback" not in details
    for fragment in fragments:
        assert fragment in details


def _assert_still_serving(stub, png: bytes) -> None:
    response = stub.Predict(_request(png), timeout=60)
    assert (response.height, response.width) == (101, 133)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_its_status_and_the_server_keeps_serving(stub, small_camvid_png: bytes, case: str) -> None:
    build, code, fragments = CASES[case]
    _assert_refused(stub, build(small_camvid_png), code, fragments)
    _assert_still_serving(stub, small_camvid_png)


def test_client_raises_the_error_class_of_the_status(onnx_client: PreLabelClient, small_camvid_png: bytes) -> None:
    from prelabel_client import InvalidInput, ModelNotFound, ResourceExhausted

    with pytest.raises(InvalidInput):
        onnx_client.predict(b"not an image")
    with pytest.raises(ModelNotFound):
        onnx_client.predict(small_camvid_png, model="no-such-model")
    with pytest.raises(ResourceExhausted):
        onnx_client.predict(png_claiming(100_000, 100_000))
    assert onnx_client.predict(small_camvid_png).ok


def test_more_unreadable_inputs_than_the_window_are_each_reported_and_the_stream_goes_on(
        onnx_client: PreLabelClient, small_camvid_png: bytes, tmp_path: Path) -> None:
    """Each unreadable input once held a send slot that only a response frees; with a window's
    worth of them in a row and nothing in flight, ``predict_many`` waited for ever."""
    missing = [tmp_path / f"missing-{i}.png" for i in range(3)]
    results = list(onnx_client.predict_many([*missing, small_camvid_png, missing[0], small_camvid_png], window=2,
                                            raise_on_error=False, timeout=30))
    assert [r.ok for r in results] == [False, False, False, True, False, True]
    assert all("cannot be sent" in results[i].error.message for i in (0, 1, 2, 4))


@pytest.mark.parametrize("options,says", [
    ({"mask_format": "png_uint16"}, "unknown mask_format 'png_uint16': choose from ['png_uint8', 'raw_uint8']"),
    ({"probabilities_format": "png_uint8"}, "choose from ['raw_float16', 'raw_uint8']"),
    ({"mc_samples": -1}, "mc_samples cannot be -1"),
    ({"max_review_regions": -3}, "max_review_regions cannot be -3"),
])
def test_options_the_client_cannot_send_name_the_option(onnx_client: PreLabelClient, small_camvid_png: bytes,
                                                        options: dict, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        onnx_client.predict(small_camvid_png, **options)
    assert says in str(raised.value)


def test_a_single_output_may_be_named_alone(onnx_client: PreLabelClient, small_camvid_png: bytes) -> None:
    """``outputs="mask"`` was iterated letter by letter: "unknown output 'm'"."""
    prediction = onnx_client.predict(small_camvid_png, outputs="mask")
    assert prediction.mask is not None and prediction.uncertainty is None


def test_a_stream_with_no_image_allowed_in_flight_is_refused_before_it_opens(onnx_client: PreLabelClient,
                                                                             small_camvid_png: bytes) -> None:
    for stream in (onnx_client.predict_many, onnx_client.score_many):
        with pytest.raises(ValueError, match="window must be at least 1"):
            stream([small_camvid_png], window=0)


@pytest.fixture(scope="module")
def limited_server(start_extra_server) -> RunningServer:
    """A server with small limits: 200 kB messages, 100 000 pixels."""
    return start_extra_server(max_message_bytes=200_000, max_image_pixels=100_000)


@pytest.fixture(scope="module")
def limited(limited_server: RunningServer) -> Iterator[pb_grpc.PrelabelServiceStub]:
    with grpc.insecure_channel(limited_server.address) as channel:
        yield pb_grpc.PrelabelServiceStub(channel)


class TestLimits:

    def test_an_oversized_message_is_resource_exhausted(self, limited, camvid_val_images: list[Path],
                                                         small_camvid_png: bytes) -> None:
        image = read_rgb(camvid_val_images[0])  # 480x360x3 = 518 400 bytes raw
        request = pb.PredictRequest(image=_raw(image.tobytes(), 360, 480, 3))
        _assert_refused(limited, request, EXHAUSTED, ("200000",))
        _assert_still_serving(limited, small_camvid_png)

    def test_an_image_over_the_pixel_limit_is_resource_exhausted(self, limited, camvid_val_images: list[Path],
                                                                 small_camvid_png: bytes) -> None:
        jpeg = encode(read_rgb(camvid_val_images[0]), ".jpg")  # 480x360 = 172 800 pixels, ~40 kB
        _assert_refused(limited, _request(jpeg), EXHAUSTED, ("480x360", "172800 pixels", "limit of 100000",
                                                             "PRELABEL_MAX_IMAGE_PIXELS"))
        _assert_still_serving(limited, small_camvid_png)

    def test_a_response_over_the_limit_is_refused_before_inference_and_counted(self, limited_server,
                                                                                small_camvid_png: bytes) -> None:
        """Its size was known from the image's header, yet the whole pass ran first (25 s and 1.7 GB
        for a 4000x3000 photo), and the refusal was counted as ok."""
        def sample(name: str, **labels: str) -> float:
            return REGISTRY.get_sample_value(name, {"model": "deeplab", **labels}) or 0.0

        before = {"ok": sample("prelabel_requests_total", outcome="ok"),
                  "refused": sample("prelabel_requests_total", outcome="resource_exhausted"),
                  "batches": sample("prelabel_batch_size_count")}
        with PreLabelClient(limited_server.address, timeout=60) as client:  # 11 x 133 x 101 float16: 295 kB
            with pytest.raises(ResourceExhausted, match="at least 295526 bytes.*PRELABEL_MAX_MESSAGE_BYTES"):
                client.predict(small_camvid_png, model="deeplab", outputs=("mask", "probabilities"))
        assert sample("prelabel_requests_total", outcome="resource_exhausted") == before["refused"] + 1
        assert sample("prelabel_requests_total", outcome="ok") == before["ok"]
        assert sample("prelabel_batch_size_count") == before["batches"], "the network ran for it"

    def test_an_image_too_large_for_a_message_fails_alone_in_a_stream(self, limited_server, camvid_val_images,
                                                                      small_camvid_png: bytes) -> None:
        """gRPC fails a whole stream on one message over the limit; a client that knows the
        server's limit refuses that image alone and sends the others."""
        too_large = read_rgb(camvid_val_images[0])  # 518 400 bytes as raw pixels
        with PreLabelClient(limited_server.address, timeout=60, max_message_bytes=200_000) as client:
            results = list(client.predict_many([small_camvid_png, too_large, small_camvid_png], raise_on_error=False))
        assert [r.ok for r in results] == [True, False, True]
        assert results[1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_message_bytes" in results[1].error.message and "raw pixels" in results[1].error.message

    def test_a_single_call_over_the_clients_own_limits_says_which_limit(self, onnx_server: RunningServer,
                                                                        small_camvid_rgb) -> None:
        """Both used to blame the server's PRELABEL_MAX_MESSAGE_BYTES and give advice for streams."""
        small_png = cv2.imencode(".png", small_camvid_rgb[:40, :60])[1].tobytes()
        assert len(small_png) < 30_000 < small_camvid_rgb.nbytes
        with PreLabelClient(onnx_server.address, timeout=60, max_message_bytes=30_000) as client:
            with pytest.raises(ResourceExhausted, match="the image makes a .*raw pixels") as raised:
                client.predict(small_camvid_rgb)  # 40 kB of raw pixels: refused before it is sent
            assert "predict_many" not in raised.value.message
            # 11 x 40 x 60 float16 probabilities: 53 kB back
            with pytest.raises(ResourceExhausted, match="response was over this client's max_message_bytes"):
                client.predict(small_png, outputs=("probabilities",))
            assert client.predict(small_png).mask.shape == (40, 60)

    def test_a_stream_failed_by_the_servers_size_limit_says_what_to_set(self, limited_server, camvid_val_images,
                                                                       small_camvid_png: bytes) -> None:
        with PreLabelClient(limited_server.address, timeout=60) as client:  # its limit: 64 MB, the server's 200 kB
            with pytest.raises(ResourceExhausted, match="PRELABEL_MAX_MESSAGE_BYTES.*max_message_bytes"):
                list(client.predict_many([small_camvid_png, read_rgb(camvid_val_images[0])]))

    def test_a_batch_job_does_not_wait_out_a_message_that_is_too_large(self, limited_server, camvid_val_images,
                                                                      tmp_path: Path, capsys) -> None:
        """Only the server's stream and call limits are waited out; a CamVid PNG (276 kB) over the
        200 kB limit fails the job at once with the setting to change."""
        with PreLabelClient(limited_server.address, timeout=60) as client:
            with pytest.raises(ResourceExhausted, match="PRELABEL_MAX_MESSAGE_BYTES") as raised:
                predict_files(client, camvid_val_images[:2], tmp_path / "out", patience_s=600)
            assert not getattr(raised.value, "__notes__", [])  # a second run meets the same limit: no --resume
            # an image that cannot be sent keeps its own error (it got the stream's, "not processed")
            with pytest.raises(ResourceExhausted, match="PRELABEL_MAX_MESSAGE_BYTES"):
                predict_files(client, [tmp_path / "missing.png", camvid_val_images[0]], tmp_path / "out2")
        assert "server busy" not in capsys.readouterr().err
        missing, large = [json.loads(line)["error"] for line in (tmp_path / "out2" / "manifest.jsonl").open()]
        assert "No such file" in missing and "not processed" not in missing
        assert large.startswith("not processed") and "PRELABEL_MAX_MESSAGE_BYTES" in large

    def test_the_cli_given_the_servers_limit_reports_the_large_image_alone(self, limited_server, camvid_val_images,
                                                                          small_camvid_png: bytes, tmp_path: Path,
                                                                          capsys) -> None:
        """The error told users to give the client the server's limit, which the CLI had no way to
        take: one large image failed the whole job."""
        small = tmp_path / "small.png"
        small.write_bytes(small_camvid_png)
        code = prelabel_main(["predict", str(small), str(camvid_val_images[0]), str(small), "--out",
                              str(tmp_path / "out"), "--server", limited_server.address, "--max-message-bytes",
                              "200000"])
        report = capsys.readouterr().out
        assert code == 1 and "2 images pre-annotated" in report
        assert f"FAILED {camvid_val_images[0]}: RESOURCE_EXHAUSTED" in report and "send a smaller image" in report


def test_a_long_stream_item_id_fails_only_its_own_item(onnx_server: RunningServer, start_extra_server,
                                                       small_camvid_rgb: np.ndarray) -> None:
    """The id a client chooses travels back in the item's response: with the response just under
    the limit, a long id once pushed the message over it, and gRPC failed the whole stream."""
    height, width = small_camvid_rgb.shape[:2]
    request = pb.PredictRequest(image=_raw(small_camvid_rgb.tobytes(), height, width, 3),
                                outputs=[pb.OUTPUT_PROBABILITIES], probabilities_format=pb.ARRAY_FORMAT_RAW_UINT8)
    with grpc.insecure_channel(onnx_server.address) as channel:
        response_bytes = pb_grpc.PrelabelServiceStub(channel).Predict(request, timeout=60).ByteSize()
    running = start_extra_server(max_message_bytes=response_bytes + 40)  # room for short ids only
    ids = ["short", "images/" + "x" * 200 + ".png", "after"]
    with grpc.insecure_channel(running.address) as channel:
        stream = pb_grpc.PrelabelServiceStub(channel).PredictStream(
            iter([pb.PredictStreamRequest(id=item_id, request=request) for item_id in ids]), timeout=60)
        outcomes = {item.id: item for item in stream}
    assert [outcomes[i].WhichOneof("outcome") for i in ids] == ["response", "error", "response"]
    assert outcomes[ids[1]].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "PRELABEL_MAX_MESSAGE_BYTES" in outcomes[ids[1]].error.message


def test_an_unknown_option_name_is_a_clear_error_before_any_request(onnx_client: PreLabelClient,
                                                                    small_camvid_png: bytes) -> None:
    """Names the client maps to the protocol's enums once raised a bare KeyError, and in a stream
    "Exception iterating requests!" for the whole stream, even with raise_on_error=False."""
    with pytest.raises(ValueError, match="unknown measure 'bald': choose from"):
        onnx_client.predict(small_camvid_png, measure="bald")
    with pytest.raises(ValueError, match="unknown mask_format 'png': choose from"):
        onnx_client.predict_many([small_camvid_png], mask_format="png", raise_on_error=False)
    with pytest.raises(ValueError, match="unknown output 'masks': choose from"):
        onnx_client.score_many([small_camvid_png], outputs=("masks",))
    with pytest.raises(ValueError, match=r"top_fraction must be in \(0, 1\], got 0"):  # not once per image
        onnx_client.score_many([small_camvid_png], top_fraction=0.0)


def test_score_ignores_the_output_and_format_fields_as_documented(stub, small_camvid_png: bytes) -> None:
    """Score returns no maps, and the .proto says it ignores these fields; an unknown output or a
    format that no map takes failed every image with INVALID_ARGUMENT."""
    odd = _request(small_camvid_png, outputs=[99], mask_format=pb.ARRAY_FORMAT_RAW_FLOAT16, max_review_regions=0)
    (response,) = stub.Score(iter([pb.ScoreRequest(id="a", request=odd)]), timeout=120)
    assert response.WhichOneof("outcome") == "scores" and 0.0 <= response.scores.mean_uncertainty <= 1.0
    with pytest.raises(grpc.RpcError) as refused:  # Predict still checks them
        stub.Predict(odd, timeout=120)
    assert refused.value.code() == INVALID


def test_an_error_raised_by_the_callers_own_images_comes_through_unchanged(onnx_client: PreLabelClient,
                                                                          small_camvid_png: bytes) -> None:
    """gRPC replaced it with UNKNOWN "Exception iterating requests!" and the results before it were lost."""
    def images() -> Iterator[bytes]:
        yield small_camvid_png
        yield small_camvid_png
        raise LookupError("the caller's own bug")

    results = []
    with pytest.raises(LookupError, match="the caller's own bug"):
        for result in onnx_client.predict_many(images()):
            results.append(result)
    assert [r.ok for r in results] == [True, True]


def test_an_id_already_in_flight_in_a_stream_is_refused_alone(stub, camvid_val_images: list[Path]) -> None:
    """Two requests with one id were both answered, out of order: the client could not tell which
    answer was which image's."""
    image = pb.Image(encoded=camvid_val_images[0].read_bytes())
    ids = ["a", "a", "b"]
    responses = list(stub.PredictStream(iter(pb.PredictStreamRequest(id=i, request=pb.PredictRequest(image=image))
                                             for i in ids), timeout=120))
    assert sorted(r.id for r in responses) == ["a", "a", "b"]
    refused = [r for r in responses if r.HasField("error")]
    assert len(refused) == 1 and refused[0].id == "a"
    assert refused[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "already in flight" in refused[0].error.message
    assert sum(r.HasField("response") for r in responses) == 2


def test_an_id_may_be_reused_once_its_answer_has_arrived(stub) -> None:
    """The id was freed only after gRPC came back for the next answer: a client that sent the next
    request as soon as it had the answer got "already in flight" for 1-20 % of them."""
    answered = threading.Semaphore(0)
    tiny = pb.Image(raw=pb.RawImage(data=bytes(32 * 32 * 3), height=32, width=32, channels=3))

    def lockstep():
        for _ in range(100):
            yield pb.PredictStreamRequest(id="same", request=pb.PredictRequest(image=tiny, outputs=[pb.OUTPUT_MASK]))
            answered.acquire()

    errors = []
    for response in stub.PredictStream(lockstep(), timeout=300):
        if response.HasField("error"):
            errors.append(response.error.message)
        answered.release()
    assert errors == []


def test_repeated_ids_are_refused_even_with_one_stream_worker(start_extra_server, small_camvid_png: bytes) -> None:
    """The id was claimed only while a worker ran its item: with one worker the two requests never
    overlapped and both were answered under one id. Now ids are claimed as they are read and
    freed once their answer is sent."""
    server = start_extra_server(stream_workers=1, max_queue_size=4)
    image = pb.Image(encoded=small_camvid_png)
    with grpc.insecure_channel(server.address) as channel:
        responses = list(pb_grpc.PrelabelServiceStub(channel).PredictStream(
            iter(pb.PredictStreamRequest(id=i, request=pb.PredictRequest(image=image)) for i in ["x", "x", "y"]),
            timeout=120))
    assert sorted((r.id, r.HasField("error")) for r in responses) == [("x", False), ("x", True), ("y", False)]
