"""Per-class COCO masks (OUTPUT_CLASS_SEGMENTS) through the real server and client."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from prelabel_client import PreLabelClient
from prelabel_proto import prelabel_pb2 as pb


def test_the_segments_rebuild_the_mask_exactly(client: PreLabelClient, camvid_val_images: list[Path]):
    prediction = client.predict(camvid_val_images[5], outputs=("mask", "class_segments"))
    segments = prediction.class_segments
    present = np.unique(prediction.mask)
    assert [s.class_id for s in segments] == present.tolist()
    rebuilt = np.full(prediction.mask.shape, 255, np.uint8)
    for segment in segments:
        where = segment.to_mask()
        assert not (rebuilt[where] != 255).any(), "segments overlap"
        rebuilt[where] = segment.class_id
        ys, xs = np.nonzero(where)
        assert segment.area == where.sum()
        assert segment.box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        share = prediction.summary.classes[segment.class_id]
        assert segment.name == share.name and abs(segment.score - share.mean_confidence) < 1e-6
        assert 0 < segment.score <= 1
    np.testing.assert_array_equal(rebuilt, prediction.mask)
    assert not client.predict(camvid_val_images[5]).class_segments  # only when asked for


def test_the_rle_is_what_coco_tools_read(onnx_client: PreLabelClient, camvid_val_images: list[Path]):
    """The segmentation dict goes into a COCO file and back through pycocotools unchanged; the
    counts are the compressed string form, not a list of runs."""
    prediction = onnx_client.predict(camvid_val_images[9], outputs=("class_segments",))
    assert prediction.mask is None and prediction.uncertainty is None
    for segment in prediction.class_segments:
        assert segment.rle["size"] == [360, 480] and isinstance(segment.rle["counts"], str)
        as_read = {"size": segment.rle["size"], "counts": segment.rle["counts"].encode()}
        assert coco_mask.area(as_read) == segment.area
        assert coco_mask.toBbox(as_read).tolist() == list(segment.box)


def test_a_tiled_photo_gets_segments_at_its_own_size(onnx_client: PreLabelClient, camvid_val_images: list[Path]):
    photo = cv2.resize(cv2.imread(str(camvid_val_images[2])), (1100, 700))
    prediction = onnx_client.predict(cv2.imencode(".png", photo)[1].tobytes(), outputs=("mask", "class_segments"),
                                     model="deeplab")
    assert prediction.tiles > 1
    assert sum(s.area for s in prediction.class_segments) == 700 * 1100
    for segment in prediction.class_segments:
        np.testing.assert_array_equal(segment.to_mask(), prediction.mask == segment.class_id)


def test_raw_grpc_callers_get_the_counts_as_bytes(onnx_server) -> None:
    import grpc

    from prelabel_proto import prelabel_pb2_grpc as pb_grpc

    image = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes()
    with grpc.insecure_channel(onnx_server.address) as channel:
        response = pb_grpc.PrelabelServiceStub(channel).Predict(
            pb.PredictRequest(image=pb.Image(encoded=image), outputs=[pb.OUTPUT_CLASS_SEGMENTS]), timeout=60)
    assert len(response.class_segments) >= 1
    assert sum(s.area for s in response.class_segments) == 20 * 30
    first = response.class_segments[0]
    decoded = coco_mask.decode({"size": [response.height, response.width], "counts": first.rle_counts})
    assert decoded.shape == (20, 30) and decoded.sum() == first.area
