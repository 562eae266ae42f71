"""Python client for prelabel: ``PreLabelClient("host:port").predict("image.png")``."""

from prelabel_client.client import PreLabelClient
from prelabel_client.results import ClassSegment, ClassShare, FailedPrediction, ImageScores, ModelInfo, Prediction, Summary
from prelabel_proto.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    PrelabelError,
    ResourceExhausted,
    Unauthenticated,
)

__all__ = ["Cancelled", "ClassSegment", "ClassShare", "DeadlineExceeded", "FailedPrecondition", "FailedPrediction", "ImageScores",
           "InternalError", "InvalidInput", "ModelInfo", "ModelNotFound", "ModelUnavailable", "PreLabelClient",
           "Prediction", "PrelabelError", "ResourceExhausted", "Summary", "Unauthenticated"]
