"""Python client for prelabel: ``PreLabelClient("host:port").predict("image.png")``."""

from prelabel_client.client import PreLabelClient
from prelabel_client.results import ClassShare, FailedPrediction, ModelInfo, Prediction, Summary
from prelabel_proto.errors import (
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    PrelabelError,
    ResourceExhausted,
)

__all__ = ["ClassShare", "FailedPrediction", "InvalidInput", "ModelInfo", "ModelNotFound", "ModelUnavailable",
           "PreLabelClient", "Prediction", "PrelabelError", "ResourceExhausted", "Summary"]
