"""``prelabel serve`` stops on SIGTERM whichever of its threads the kernel hands the signal to.

On an H100 the server ignored SIGTERM: the signal went to one of CUDA's threads, and the main
thread, blocked in one endless wait, never ran Python's handler. Here a helper thread inside the
server sends SIGTERM to itself, which reproduces that delivery on any machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prelabel_client import PreLabelClient

# Runs `prelabel serve`; a line on stdin makes a non-main thread send SIGTERM to itself.
_SIGNAL_FROM_A_WORKER_THREAD = """
import signal, sys, threading
def terminate_from_this_thread():
    sys.stdin.readline()
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
threading.Thread(target=terminate_from_this_thread, daemon=True).start()
from prelabel_client.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_delivered_to_another_thread_stops_the_server(model_repository: Path, small_camvid_png: bytes):
    command = [sys.executable, "-c", _SIGNAL_FROM_A_WORKER_THREAD, "serve", "--backend", "onnx",
               "--host", "127.0.0.1", "--port", "0", "--model-repository", str(model_repository)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()  # "prelabel serving on HOST:PORT (default model: ...)"
        assert banner.startswith("prelabel serving on "), process.stderr.read()[-3000:] if process.poll() else banner
        with PreLabelClient(banner.split()[3], timeout=120) as client:
            assert client.predict(small_camvid_png).mask.shape == (101, 133)
        process.stdin.write("stop\n")
        process.stdin.flush()
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr[-3000:]
        assert "stopping: calls in flight get 5 s to finish" in stderr and stderr.rstrip().endswith("stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_sigterm_during_a_tiled_image_ends_it_cleanly(model_repository: Path, camvid_val_images: list[Path]):
    """The call was cancelled, but its thread ran on to the next band, met the interpreter's exit
    (which refuses new pool work) and logged an internal error with a traceback, every time."""
    import signal
    import threading
    import time

    import cv2

    photo = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(camvid_val_images[0])), (2400, 1800)))[1].tobytes()
    command = [sys.executable, "-m", "prelabel_client.cli", "serve", "--backend", "onnx", "--host", "127.0.0.1",
               "--port", "0", "--model-repository", str(model_repository)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("prelabel serving on "), process.stderr.read()[-3000:] if process.poll() else banner
        outcome: list[object] = []

        def predict() -> None:
            with PreLabelClient(banner.split()[3], timeout=120, retries=0) as client:
                try:
                    outcome.append(client.predict(photo, model="deeplab"))
                except Exception as exc:  # the server going away mid-call: any status will do here
                    outcome.append(exc)

        caller = threading.Thread(target=predict, daemon=True)
        caller.start()
        time.sleep(2)  # well into the photo's bands of tiles
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        caller.join(timeout=60)
        assert process.returncode == 0, stderr[-3000:]
        assert "unexpected error" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_stream_ends_when_the_server_stops_under_it(model_repository: Path, camvid_val_images: list[Path]):
    """With gRPC's retry policy on streams too, a stream whose server was stopped while another
    client's tiled call ran waited in its response iterator for ever (no idle limit set)."""
    import signal
    import threading
    import time

    import cv2

    from prelabel_client import PrelabelError

    photo = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(camvid_val_images[0])), (2400, 1800)))[1].tobytes()
    command = [sys.executable, "-m", "prelabel_client.cli", "serve", "--backend", "onnx", "--host", "127.0.0.1",
               "--port", "0", "--model-repository", str(model_repository)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PRELABEL_GRACE_SECONDS": "1"})
    try:
        banner = process.stdout.readline()
        assert banner.startswith("prelabel serving on "), process.stderr.read()[-3000:] if process.poll() else banner
        address, outcome = banner.split()[3], []

        def unary() -> None:
            with PreLabelClient(address, timeout=120) as client:
                try:
                    client.predict(photo, model="deeplab")
                except PrelabelError:
                    pass

        def stream() -> None:
            with PreLabelClient(address, timeout=120) as client:  # no stream_idle_timeout
                try:
                    outcome.extend(client.predict_many([photo] * 3, raise_on_error=False, model="deeplab"))
                except PrelabelError as exc:
                    outcome.append(exc)

        callers = [threading.Thread(target=work, daemon=True) for work in (stream, unary)]
        for caller in callers:
            caller.start()
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        callers[0].join(timeout=60)
        assert not callers[0].is_alive(), "the stream still waits on a server that is gone"
        assert outcome and isinstance(outcome[-1], PrelabelError)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
