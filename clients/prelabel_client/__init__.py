"""Python client for prelabel: ``PreLabelClient("host:port").predict("image.png")``."""

from prelabel_client.client import PreLabelClient
from prelabel_client.results import ClassShare, FailedPrediction, ImageScores, ModelInfo, Prediction, Summary
from prelabel_proto.errors import (
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    PrelabelError,
    ResourceExhausted,
)

__all__ = ["ClassShare", "FailedPrediction", "ImageScores", "InvalidInput", "ModelInfo", "ModelNotFound", "ModelUnavailable",
           "PreLabelClient", "Prediction", "PrelabelError", "ResourceExhausted", "Summary"]
