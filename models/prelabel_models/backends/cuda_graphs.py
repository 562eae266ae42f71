"""The network's forward pass replayed as a CUDA graph: one launch instead of a few hundred.

On an H100 the server's batcher thread spent a third of its time launching the network's layers,
one kernel at a time. Each launch gives up the GIL and must win it back from dozens of request
threads decoding and encoding images, so a pass the GPU runs in 20 ms took the thread several
times that (stack samples, docs/benchmarks.md). A graph captured once per input shape is replayed
with a single call. Batches are rounded up to a power of two so that a few graphs cover every
batch size; the images of a batch are independent of one another (batch norm in eval mode,
per-image pooling), so the rows past the batch's own change nothing in its results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

MAX_GRAPHS = 12  # per model; each holds its activations' memory (shared between graphs, but not with eager passes)


@dataclass(frozen=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor
    outputs: torch.Tensor


class GraphedForward:
    """``forward(images) -> logits`` on a CUDA device, replayed from graphs. The first ``MAX_GRAPHS``
    shapes seen get a graph; other shapes, and any shape whose capture failed, run layer by layer."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], device: str) -> None:
        self._forward = forward
        self._device = torch.device(device)
        self._graphs: dict[tuple[int, ...], _Graph | None] = {}  # None: run eagerly
        self._pool = torch.cuda.graph_pool_handle()
        self._lock = threading.Lock()  # one replay at a time: the graphs share their buffers

    @property
    def captured_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes replayed from a graph, batch sizes rounded up to a power of two."""
        return [shape for shape, graph in self._graphs.items() if graph is not None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        count = images.shape[0]
        shape = (1 << (count - 1).bit_length(), *images.shape[1:])
        with self._lock:
            if shape not in self._graphs:
                self._graphs[shape] = self._capture(shape, images) if len(self._graphs) < MAX_GRAPHS else None
            graph = self._graphs[shape]
            if graph is None:
                return self._forward(images)
            graph.inputs[:count].copy_(images)
            graph.graph.replay()
            return graph.outputs[:count].clone()  # the next replay, of any graph, overwrites the outputs

    def _capture(self, shape: tuple[int, ...], like: torch.Tensor) -> _Graph | None:
        inputs = torch.zeros(shape, dtype=like.dtype, device=self._device).contiguous(memory_format=torch.channels_last)
        try:
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):  # warm-up: cuDNN picks its algorithms outside the capture
                self._forward(inputs)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                outputs = self._forward(inputs)
        except Exception as exc:  # out of memory, or an operation a graph cannot hold
            # This shape runs eagerly from now on (capturing again on every batch would fail
            # again), and the eager pass reports the error itself if it fails too.
            log.warning("could not capture a CUDA graph for inputs %s (%s: %s): that shape runs without one",
                        shape, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            return None
        return _Graph(graph, inputs, outputs)
