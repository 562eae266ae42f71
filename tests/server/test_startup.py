"""A server that cannot start says why at once, naming the setting to fix: a port already in use
is an error, not a second server beside the first (gRPC's default, SO_REUSEPORT, allowed that
silently); so are half a TLS setting, a certificate and key that do not match, a metrics port in
use, a default model that no package declares and a host that does not resolve."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from prelabel_client import PreLabelClient
from prelabel_client.cli import main
from prelabel_models import ModelPackageError
from prelabel_server.grpc_api.server import start_server
from prelabel_server.settings import ServerSettings


def _settings(model_repository: Path, **fields: object) -> ServerSettings:
    return ServerSettings(**{"host": "127.0.0.1", "model_repository": model_repository, "backend": "onnx", **fields})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_the_cli_reaches_a_tls_server_with_its_root_certificate(model_repository, certificate, capsys) -> None:
    """The CLI had no TLS option: against a TLS server it failed with "Socket closed"."""
    cert, key = certificate
    running = start_server(_settings(model_repository, port=0, tls_certificate=cert, tls_private_key=key))
    try:
        assert main(["models", "--server", running.address, "--root-certificates", str(cert)]) == 0
        assert "deeplab" in capsys.readouterr().out
        assert main(["models", "--server", running.address, "--timeout", "10"]) == 1  # plaintext is not answered
        error = capsys.readouterr().err
        assert "UNAVAILABLE" in error and "if the server speaks TLS" in error, error
        assert main(["models", "--server", running.address, "--tls", "--timeout", "10"]) == 1  # the system's roots
        error = capsys.readouterr().err
        assert "not signed by an authority this client trusts" in error and "--root-certificates" in error, error
    finally:
        running.stop(grace=0)


def test_half_a_tls_setting_or_a_mismatched_key_is_refused(model_repository, certificate, tmp_path) -> None:
    """With only the certificate set the server served plaintext; a key that is not the
    certificate's was reported as "is another server using the port?"."""
    cert, _ = certificate
    with pytest.raises(ValidationError, match="TLS needs both"):
        _settings(model_repository, port=0, tls_certificate=cert)
    with pytest.raises(OSError, match="cannot serve TLS with PRELABEL_TLS_CERTIFICATE=.*the key the certificate's own"):
        start_server(_settings(model_repository, port=0, tls_certificate=cert, tls_private_key=cert))


def test_startup_errors_name_the_setting_to_fix(model_repository) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"cannot serve metrics on 127.0.0.1:\d+ .*PRELABEL_METRICS_PORT"):
            start_server(_settings(model_repository, port=0, metrics_port=taken.getsockname()[1]))
    with pytest.raises(ModelPackageError, match="PRELABEL_DEFAULT_MODEL names 'ghost', which no package"):
        start_server(_settings(model_repository, port=0, default_model="ghost"))
    with pytest.raises(OSError, match="host 'no-such-host.invalid' does not resolve"):
        start_server(_settings(model_repository, host="no-such-host.invalid", port=0))


def test_a_port_in_use_is_a_startup_error(model_repository, small_camvid_png):
    first = start_server(_settings(model_repository, port=0))
    try:
        with pytest.raises(OSError, match="is another server using the port.*PRELABEL_REUSE_PORT"):
            start_server(_settings(model_repository, port=first.port))
        with PreLabelClient(first.address, timeout=60) as client:  # the first one is unharmed
            assert client.predict(small_camvid_png, model="deeplab").mask.shape == (101, 133)
    finally:
        first.stop(grace=0)


def test_processes_may_share_a_port_when_asked(model_repository):
    first = start_server(_settings(model_repository, port=0, reuse_port=True))
    try:
        second = start_server(_settings(model_repository, port=first.port, reuse_port=True))
        assert second.port == first.port
        second.stop(grace=0)
    finally:
        first.stop(grace=0)


def test_every_setting_is_documented_in_the_readme(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    undocumented = [name for name in ServerSettings.model_fields if f"`PRELABEL_{name.upper()}`" not in readme]
    assert undocumented == [], f"README's settings table lacks {undocumented}"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_host_is_served(model_repository: Path, host: str) -> None:
    """``::1`` became ``::1:PORT``, which gRPC took for a name, and the error blamed the port."""
    running = start_server(_settings(model_repository, host=host, port=0))
    try:
        assert running.address.startswith("[::1]:")
        with PreLabelClient(running.address, timeout=30) as client:
            assert client.model("deeplab").state == "ready"
    finally:
        running.stop(grace=0)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_device_this_machine_lacks_stops_serve_with_status_2(model_repository: Path, backend: str, capsys) -> None:
    """The server used to start and list every package as failed (health NOT_SERVING, exit 0 on a
    signal), so a deployment with a wrong device setting looked up and served nothing."""
    device = "cuda:99" if backend == "torch" else "cuda"  # no machine has a hundred GPUs; CI has no CUDA provider
    if backend == "onnx" and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this onnxruntime runs on CUDA")
    status = main(["serve", "--backend", backend, "--device", device, "--port", "0",
                   "--model-repository", str(model_repository)])
    assert status == 2
    assert f"prelabel serve: device '{device}'" in capsys.readouterr().err
