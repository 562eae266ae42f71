"""Unusable settings or inputs get one line that says what is wrong and exit status 2, never a
traceback (checked on the real command, in its own process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prelabel_client.cli import main


def _prelabel(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prelabel_client.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize(("args", "env", "says"), [
    (("serve",), {"PRELABEL_BACKEND": "tensorflow"}, "PRELABEL_BACKEND: Input should be 'auto', 'torch' or 'onnx'"),
    (("serve",), {"PRELABEL_PORT": "abc"}, "PRELABEL_PORT: Input should be a valid integer"),
    (("serve",), {"PRELABEL_MODEL_REPOSITORY": "/no/such/folder"}, "is not a folder"),
    (("select", "/no/such/pool", "--budget", "2", "--out", "selection.json"), {}, "the pool /no/such/pool is not a folder"),
    (("select", "samples", "--budget", "-1", "--out", "selection.json"), {}, "--budget: must be 0 or more"),
    (("demo", "--images", "/no/such/folder", "--out", "demo-output"), {}, "no PNG images in /no/such/folder"),
    (("predict", "--out", "out"), {}, "no images given: name image files or folders, or list them with --images-from"),
    (("predict", "clients", "--out", "out"), {}, "no images in clients or the folders below it"),
    (("predict", "--images-from", "/no/such/list", "--out", "out"), {}, "No such file or directory"),
    # Accepted before, then an OverflowError traceback, a thread dying, plaintext, or a start-up that never ended:
    (("serve",), {"PRELABEL_MAX_MESSAGE_BYTES": "3000000000"}, "PRELABEL_MAX_MESSAGE_BYTES: Input should be less than"),
    (("serve",), {"PRELABEL_GRACE_SECONDS": "inf"}, "PRELABEL_GRACE_SECONDS: Input should be a finite number"),
    (("serve",), {"PRELABEL_REPOSITORY_POLL_SECONDS": "0.000001"}, "use 0 (off) or 0.1 or more"),
    (("serve",), {"PRELABEL_TLS_CERTIFICATE": "cert.pem"}, "TLS needs both PRELABEL_TLS_CERTIFICATE and"),
    (("serve",), {"PRELABEL_INFERENCE_THREADS": "100000"}, "PRELABEL_INFERENCE_THREADS: Input should be less than"),
    # a misspelled variable was ignored: this one served with no authentication at all
    (("serve",), {"PRELABEL_AUTH_TOKENS": "s3cret"},
     "unknown setting PRELABEL_AUTH_TOKENS (did you mean PRELABEL_AUTH_TOKEN?)"),
    # served on the CPU while reporting the device as "banana"
    (("serve", "--device", "banana"), {}, "'banana' is not a device: use cpu, cuda or cuda:N"),
    # a flag's error named the environment variable instead
    (("serve", "--port", "70000"), {}, "--port: must be 0 to 65535, got 70000"),
    (("models", "--timeout", "inf"), {}, "--timeout: must be more than 0 and less than 1e9 seconds"),
    # every call failed with exit 1 instead
    (("models", "--max-message-bytes", "100"), {}, "--max-message-bytes: must be 1024 to 2147483647, got 100"),
    (("train", "--config", "c.toml", "--data", "d", "--out", "o", "--epochs", "0"), {}, "--epochs: must be 1 or more"),
    (("evaluate", "models/camvid", "--data", "d", "--threads", "-1"), {}, "--threads: must be 1 or more"),
    # gRPC took port 99999 as 34463, and an empty address as an internal error with its own log lines:
    (("models", "--server", "127.0.0.1:99999"), {}, "--server: port 99999 of '127.0.0.1:99999' is not 1 to 65535"),
    (("models",), {"PRELABEL_SERVER": ""}, "--server: give the server as HOST:PORT"),
])
def test_unusable_settings_and_inputs_get_one_line(args, env, says, tmp_path: Path):
    run = _prelabel(*args, **env)
    assert run.returncode == 2
    assert says in run.stderr and "Traceback" not in run.stderr


def test_export_of_a_folder_without_a_card_says_so(tmp_path: Path):
    run = _prelabel("export", str(tmp_path))
    assert run.returncode == 2
    assert "has no card.json" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("option, value, message", [("--budget", "abc", "must be a whole number, 0 or more, got 'abc'"),
                                                     ("--seed", "-1", "must be 0 or more, got -1")])
def test_select_counts_are_checked_by_the_parser(option: str, value: str, message: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    """--budget abc said "invalid _count value"; --seed -1 reached numpy and gave a traceback after
    the whole pool had been scored."""
    arguments = {"--budget": "1", "--seed": "0", option: value}
    with pytest.raises(SystemExit) as exited:
        main(["select", "pool", "--out", "sel.json", *(part for pair in arguments.items() for part in pair)])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_export_of_damaged_weights_or_without_check_images_says_so_and_writes_nothing(tmp_path: Path,
                                                                                     repo_root: Path):
    """Damaged weights gave a SafetensorError traceback; a --check-images folder that does not exist
    was found only after the export, which left unchecked ONNX files in the package."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "card.json").write_bytes((repo_root / "models/camvid/card.json").read_bytes())
    (damaged / "model.safetensors").write_bytes((repo_root / "models/camvid/model.safetensors").read_bytes()[:1000])
    run = _prelabel("export", str(damaged))
    assert run.returncode == 2 and "is not a readable safetensors file" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    whole = tmp_path / "whole"
    whole.mkdir()
    for name in ("card.json", "model.safetensors"):
        (whole / name).write_bytes((repo_root / "models/camvid" / name).read_bytes())
    run = _prelabel("export", str(whole), "--check-images", str(tmp_path / "nowhere"))
    assert run.returncode == 2 and "nowhere" in run.stderr and not list(whole.glob("*.onnx"))
    (damaged / "card.json").write_text('{"name": "x"}')
    run = _prelabel("export", str(damaged))
    assert run.returncode == 2 and "card.json is invalid: " in run.stderr and len(run.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize(("edit", "says"), [
    (lambda text: text + "\n[recipe\n", "is not valid TOML"),
    (lambda text: text + "\n[recipe]\ncrop = [100, 100]\n", "recipe.crop [100, 100] must be positive multiples"),
    (lambda text: text + "\n[recipe]\nbatch_size = 1\n", "recipe.batch_size: Input should be greater than or equal to 2"),
    (lambda text: text.replace('encoder = "resnet18"', 'encoder = "resnet1800"'), "is not a segmentation-models-pytorch encoder"),
    (lambda text: text.replace("std = [", "std = [0.0, ") .replace("mean = [", "mean = [0.5, "), "std values must be positive"),
    (lambda text: text.replace("output_stride = 16", "output_stride = 8"), "output_stride 8 must be a multiple of 16"),
])
def test_unusable_training_configs_get_one_line(edit, says: str, repo_root: Path, tmp_path: Path, capsys) -> None:
    """A TOML error or an unknown encoder gave a traceback; a crop the network cannot take, a batch
    of one or a zero std failed inside the first step; other config errors printed pydantic's
    several lines."""
    card_part = (repo_root / "models" / "configs" / "camvid.toml").read_text().split("[recipe]")[0]
    config = tmp_path / "config.toml"
    config.write_text(edit(card_part))
    code = main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and says in error and len(error.strip().splitlines()) == 1, error


def test_the_clients_and_kubernetes_variables_are_not_unknown_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes sets these in every pod beside a Service named "prelabel" (service links)."""
    from prelabel_server.settings import ServerSettings

    for name, value in {"PRELABEL_SERVER": "127.0.0.1:50051", "PRELABEL_TOKEN": "s3cret", "PRELABEL_DEVICE": "cuda:1",
                        "PRELABEL_SERVICE_HOST": "10.0.0.7", "PRELABEL_SERVICE_PORT": "50051",
                        "PRELABEL_SERVICE_PORT_GRPC": "50051", "PRELABEL_PORT_50051_TCP": "tcp://10.0.0.7:50051",
                        "PRELABEL_PORT_50051_TCP_PROTO": "tcp", "PRELABEL_PORT_50051_TCP_PORT": "50051",
                        "PRELABEL_PORT_50051_TCP_ADDR": "10.0.0.7"}.items():
        monkeypatch.setenv(name, value)
    assert ServerSettings().device == "cuda:1"


@pytest.mark.parametrize(("env", "says"), [
    ({"prelabel_auth_tokens": "s3cret"}, "unknown setting prelabel_auth_tokens (did you mean PRELABEL_AUTH_TOKEN?)"),
    ({"PRELABEL_PORT": "tcp://10.0.0.7:50051"}, "as Kubernetes sets PRELABEL_PORT for a Service named prelabel"),
])
def test_settings_read_in_any_case_and_kubernetes_port_addresses_are_explained(monkeypatch: pytest.MonkeyPatch,
                                                                               env: dict, says: str) -> None:
    from pydantic import ValidationError

    from prelabel_server.settings import ServerSettings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(says)):
        ServerSettings()
