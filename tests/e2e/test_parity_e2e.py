"""ONNX parity: the ONNX and PyTorch servers give the same mask on the same real image, and
``export``'s own parity check passes on the exported packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage
from prelabel_models.export import MAX_LOGIT_DIFF, check_parity
from prelabel_server.grpc_api.server import RunningServer


@pytest.fixture(scope="module")
def torch_client(torch_server: RunningServer):
    with PreLabelClient(torch_server.address, timeout=300) as connected:
        yield connected


@pytest.mark.parametrize("model", ["deeplab", "unet"])
def test_both_backends_give_the_same_mask(onnx_client: PreLabelClient, torch_client: PreLabelClient,
                                          camvid_val_images: list[Path], model: str) -> None:
    image = camvid_val_images[7]
    from_onnx = onnx_client.predict(image, model=model, uncertainty_format="raw_float16")
    from_torch = torch_client.predict(image, model=model, uncertainty_format="raw_float16")
    assert (from_onnx.backend, from_torch.backend) == ("onnx", "torch")
    assert (from_onnx.mask == from_torch.mask).mean() > 0.999
    np.testing.assert_allclose(from_onnx.uncertainty, from_torch.uncertainty, atol=0.01)


def test_export_parity_check_passes(model_repository: Path, camvid_val_images: list[Path]) -> None:
    report = check_parity(ModelPackage.open(model_repository / "deeplab"), camvid_val_images[10:12])
    assert report.images == 2
    assert report.passed, str(report)
    assert report.max_logit_diff <= MAX_LOGIT_DIFF and report.mask_agreement >= 0.999
