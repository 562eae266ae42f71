"""``prelabel serve`` stops on SIGTERM whichever of its threads the kernel hands the signal to.

On an H100 the server ignored SIGTERM: the signal went to one of CUDA's threads, and the main
thread, blocked in one endless wait, never ran Python's handler. Here a helper thread inside the
server sends SIGTERM to itself, which reproduces that delivery on any machine.
"""

from __future__ import annotations

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
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
