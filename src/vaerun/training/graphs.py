"""The training step as a CUDA graph: captured once per batch shape, then replayed.

A small model's step on a GPU is hundreds of short kernels, each launched from Python: the GPU waits on the
launches. A CUDA graph records the step's kernels once (forward, backward, gradient clipping, the
optimizer's update) and replays them with one launch. What a replay needs:
- static inputs: each batch is copied into the tensor the graph was recorded with;
- static outputs: the step's loss terms are written to the same tensor at every replay, so whoever keeps
  them past the next step takes a copy;
- an optimizer whose state lives on the device (Adam's ``capturable=True``), and gradients that stay where
  the capture put them (no ``zero_grad(set_to_none=True)`` between replays: the recorded backward writes
  them anew);
- warm-up: a shape's first steps run eagerly, on a side stream, before its capture (lazy initialisations
  must not be recorded);
- random numbers from the default CUDA generator: each replay draws fresh ones.
A step that cannot be captured (a host sync in it, say) raises during the capture; it then runs eagerly
for the rest of the run, and the log says why, once.

``StepGraphs`` holds the bookkeeping and takes its CUDA calls from a backend: ``CudaGraphs`` on a GPU, and
``ReplayByCalling`` on the CPU, which stands in for a graph by calling the step again, so that the
bookkeeping (static buffers, per-shape warm-up and capture, the fallback) is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from vaerun.core.errors import first_line

log = logging.getLogger(__name__)


class Captured(Protocol):
    outputs: Tensor | None

    def replay(self) -> None: ...


class GraphBackend(Protocol):
    #: whether the optimizer must keep its state on the device (``capturable=True``)
    capturable_optimizer: bool

    def eager(self) -> contextlib.AbstractContextManager[None]: ...
    def capture(self, step: Callable[[], Tensor]) -> Captured: ...


@dataclass
class _CudaCaptured:
    graph: Any
    outputs: Tensor | None

    def replay(self) -> None:
        self.graph.replay()


class CudaGraphs:
    """torch.cuda.CUDAGraph: warm-up on a side stream, graphs of every shape in one memory pool."""

    capturable_optimizer = True

    def __init__(self) -> None:
        self.pool = None
        self.side_stream = torch.cuda.Stream()

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            yield
        torch.cuda.current_stream().wait_stream(self.side_stream)

    def capture(self, step: Callable[[], Tensor]) -> _CudaCaptured:
        graph = torch.cuda.CUDAGraph()
        # autocast's cache of cast weights would outlive the capture in the graph's pool
        autocast = (
            torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)
            if torch.is_autocast_enabled("cuda")
            else contextlib.nullcontext()
        )
        with torch.cuda.graph(graph, pool=self.pool), autocast:
            outputs = step()
        self.pool = graph.pool()
        return _CudaCaptured(graph, outputs)


@dataclass
class _CalledAgain:
    step: Callable[[], Tensor]
    outputs: Tensor | None = None

    def replay(self) -> None:
        values = self.step()
        if self.outputs is None:
            self.outputs = values
        else:  # the same tensor every time, as a graph's static output
            self.outputs.copy_(values)


class ReplayByCalling:
    """A stand-in for CUDA graphs on the CPU: "capture" records the step without running it, and each
    replay calls it again on the static inputs, writing into the same output tensor."""

    capturable_optimizer = False  # torch refuses a capturable optimizer for CPU tensors

    def eager(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def capture(self, step: Callable[[], Tensor]) -> _CalledAgain:
        return _CalledAgain(step)


@dataclass
class _ShapeState:
    eager_steps: int = 0
    static_input: Tensor | None = None
    captured: Captured | None = None


@dataclass
class StepGraphs:
    """Runs ``step(batch, recording) -> stacked loss terms`` eagerly for a batch shape's first ``warmup``
    steps, then captures it (``recording=True``) with the shape's static input and replays it.
    ``before_replay`` / ``after_replay`` are called around each replay for what the recorded step cannot do
    itself (Lightning's step count)."""

    backend: GraphBackend
    warmup: int = 2
    shapes: dict[tuple[int, ...], _ShapeState] = field(default_factory=dict)
    failed: str | None = None  # why capture was given up, once it has been

    def run(
        self,
        step: Callable[[Tensor, bool], Tensor],
        batch: Tensor,
        before_replay: Callable[[], None] = lambda: None,
        after_replay: Callable[[], None] = lambda: None,
    ) -> Tensor:
        """The step on ``batch``: its loss terms, a tensor that the next replay overwrites."""
        if self.failed is not None:
            return step(batch, False)
        state = self.shapes.setdefault(tuple(batch.shape), _ShapeState())
        if state.captured is None and state.eager_steps < self.warmup:
            state.eager_steps += 1
            with self.backend.eager():
                return step(batch, False)
        if state.captured is None:
            state.static_input = batch.clone()
            static_input = state.static_input
            try:
                state.captured = self.backend.capture(lambda: step(static_input, True))
            except Exception as err:
                self.failed = first_line(err, with_type=True)
                log.warning("CUDA graphs off for this run, the training step runs eagerly (%s)", self.failed)
                return step(batch, False)
            log.info("Training step captured as a CUDA graph for batches of shape %s", list(batch.shape))
        else:
            state.static_input.copy_(batch)
        before_replay()
        state.captured.replay()
        after_replay()
        return state.captured.outputs
