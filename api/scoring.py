"""The request path's model: a replica that follows the updates log, and dynamic batching.

A `Scorer` follows one model like any replica (latest snapshot, then `<model>.updates`; no
consumer group, no input topic) and answers with the newest version it holds. Requests that
arrive together are answered by one kernel call:

    submit(X) --bounded queue (max_queue_rows; beyond: Overloaded at once)--> flush, scheduled
    on the event loop --> engine.model_assign over every queued row (up to max_batch_rows)
    --> anomaly_scores --> each request's slice of the answer, with the version that produced it

`submit_then` hands each request's answer straight to a callback from the flush; `submit` wraps
it in a future for coroutines (gRPC). The REST path takes the callback: a future's done-callbacks
are scheduled, one more event-loop turn each, and cost more than the kernel on a small batch.

The kernel runs inline on the event loop: a batch of a few thousand rows of a small model takes
tens of microseconds, less than handing it to a thread would. Rows are scored in float32, as
`serve` reads them, so `api`, `serve` and `engine` give the same cluster for the same vector at
the same version (FP64 input is rounded to float32 first).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from api.config import ApiOptions
from engine import ModelState, anomaly_scores, model_assign, model_centers
from metrics.api_metrics import ApiMetrics
from model.fields import FieldSpec, field_rows, json_type, parse_fields
from model.log import UpdateLog, open_model
from model.messages import AppliedUpdate, ModelReplica
from model.topics import TopicSpec, ensure_topics, wait_for_broker

__all__ = ["Answer", "InvalidInput", "NotReady", "Overloaded", "Scorer", "Scores"]

log = logging.getLogger("streamkm.api")

_F32_MAX = float(np.finfo(np.float32).max)
# The follower's fetch wait. Nothing here waits on its own statistics (serve's 10 ms is for
# that), and on a broker that holds a fetch for its full wait every fetch costs the scoring
# loop CPU: at 10 ms the follower took 5% of the samples at the REST maximum.
_FOLLOW_WAIT_MS = 100
# Up to this many values, a Python loop checks finiteness in a third of NumPy's call overhead.
_SMALL = 64


def _all_finite(X: np.ndarray) -> bool:
    if X.size <= _SMALL:
        return all(map(math.isfinite, X.ravel().tolist()))
    return bool(np.isfinite(X).all())


class NotReady(Exception):
    """No model yet: nothing has initialised it, or the replica has not read it yet."""


class Overloaded(Exception):
    """The queue of rows waiting to be scored is full: the request is shed at once."""


class InvalidInput(ValueError):
    """The request cannot be scored as sent; the message tells the user what to fix."""


@dataclass(frozen=True)
class Scores:
    """The answer for n rows, and the model version that produced it."""

    cluster: np.ndarray  # int32 (n,)
    distance: np.ndarray  # float32 (n,), in the model's units (standardized when scaled)
    score: np.ndarray  # float32 (n,), distance / the cluster's running RMS distance
    version: int


Answer = Callable[[Scores | Exception], None]
"""Receives a request's scores, or the exception that fails it; called once, must not raise."""


def _settle(future: asyncio.Future[Scores], result: Scores | Exception) -> None:
    if future.done():  # the caller went away
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


@dataclass(frozen=True)
class _Version:
    """What the kernel needs of one model version, computed once per version."""

    state: ModelState
    centers: np.ndarray  # in the model's units
    fields: tuple[FieldSpec, ...] | None
    field_texts: tuple[str, ...] | None
    rms: np.ndarray  # state.rms(), computed once per version
    d: int


class Scorer:
    """Answers scoring requests with the newest version of one replicated model."""

    def __init__(self, options: ApiOptions, metrics: ApiMetrics | None = None) -> None:
        self.model = options.model
        self._options = options
        self._metrics = metrics
        self.replica = ModelReplica()
        self._updates: UpdateLog | None = None
        self._current: _Version | None = None
        self._queue: deque[tuple[np.ndarray, Answer]] = deque()
        self._queued_rows = 0
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- following the model --------------------------------------------------------------

    async def start(self) -> None:
        """Reach the broker, read the model to the log's end and keep following it.

        Raises model.topics.BrokerUnreachable when the broker does not answer in time.
        """
        o = self._options
        kafka = o.kafka_client_kwargs()
        self._loop = asyncio.get_running_loop()
        await wait_for_broker(o.bootstrap, o.connect_timeout, kafka)
        # The model's topics exist before its first init: an api started first waits on them.
        specs = [TopicSpec(o.updates_topic, 1), TopicSpec(o.snapshots_topic, 1, compact=True)]
        await ensure_topics(o.bootstrap, specs, kafka)
        self._updates, _ = await open_model(
            self.replica,
            o.updates_topic,
            o.snapshots_topic,
            o.model,
            kafka,
            self._on_applied,
            fetch_wait_ms=_FOLLOW_WAIT_MS,
        )
        self._refresh()
        self._updates.follow()
        if self.ready():
            log.info("serving model %r version %d", self.model, self.version())
        else:
            log.info("model %r has no init yet; not ready until it has", self.model)

    async def stop(self) -> None:
        """Stop following; queued requests get NotReady."""
        if self._updates is not None:
            await self._updates.stop()
            self._updates = None
        self._fail_queue(NotReady("the api is shutting down"))

    def _on_applied(self, replica: ModelReplica, applied: AppliedUpdate) -> None:
        self._refresh()

    def _refresh(self) -> None:
        state, params = self.replica.state, self.replica.params
        if state is None or params is None:
            return
        if self._current is None or self._current.state is not state:
            texts = params.fields
            fields = None if texts is None else parse_fields(",".join(texts))
            rms = state.rms()
            centers = model_centers(state)
            self._current = _Version(state, centers, fields, texts, rms, state.d)
        if self._metrics is not None:
            lag = self._updates.lag if self._updates is not None else 0
            self._metrics.set_model(state.version, lag)

    # --- what the protocols ask -----------------------------------------------------------

    def ready(self) -> bool:
        """True once a model version is held."""
        return self._current is not None

    def dim(self) -> int | None:
        """d of the current model (None before the first)."""
        return None if self._current is None else self._current.state.d

    def version(self) -> int:
        """The version answers are given with now (0 before the first)."""
        return 0 if self._current is None else self._current.state.version

    def fields(self) -> tuple[str, ...] | None:
        """The schema's field texts (`path[:transform]`), None for a model of plain vectors."""
        return None if self._current is None else self._current.field_texts

    async def score(self, X: np.ndarray) -> Scores:
        """Scores of the rows of X (n, d), float32 or float64."""
        return await self.submit(X)

    async def score_events(self, events: list[Any]) -> Scores:
        """Scores of named-field events (DESIGN.md §7) in the model's fields and scaling.

        Raises InvalidInput naming the first event and field at fault.
        """
        return await self.submit(self.event_rows(events))

    def event_rows(self, events: list[Any]) -> np.ndarray:
        """The feature rows (original units) of JSON event objects; InvalidInput for any bad."""
        current = self._current
        if current is None:
            raise NotReady(f"model {self.model!r} is not loaded yet")
        if current.fields is None:
            raise InvalidInput(
                f"model {self.model!r} reads feature vectors, not named fields; "
                f"send them to /v2/models/{self.model}/infer"
            )
        if not isinstance(events, list) or not events:
            raise InvalidInput('"instances" must be a non-empty array of event objects')
        for i, event in enumerate(events):
            if type(event) is not dict:
                raise InvalidInput(f"instance {i} is {json_type(event)}; expected a JSON object")
        problems: list[tuple[int, str, str]] = []
        X, _ = field_rows(events, current.fields, list(range(len(events))), problems)
        if problems:
            i, reason, message = min(problems)
            raise InvalidInput(f"instance {i}: {message} ({reason})")
        return X

    def submit(self, X: np.ndarray) -> asyncio.Future[Scores]:
        """Queue rows for the next kernel call; the future holds their scores.

        Raises at once: NotReady (no model), InvalidInput (shape, non-finite values),
        Overloaded (the queue holds max_queue_rows rows already).
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Scores] = loop.create_future()
        self.submit_then(X, partial(_settle, future))
        return future

    def submit_then(self, X: np.ndarray, answer: Answer) -> None:
        """Queue rows for the next kernel call; `answer` gets their scores from the flush.

        Raises at once as `submit` does; later failures (a model that vanished or changed d,
        shutdown) reach `answer` as the exception.
        """
        current = self._current
        if current is None:
            raise NotReady(f"model {self.model!r} is not loaded yet")
        X = self._checked(X, current.d)
        n = X.shape[0]
        if self._queued_rows + n > self._options.max_queue_rows:
            raise Overloaded(
                f"{self._queued_rows} rows are waiting to be scored (--max-queue-rows "
                f"{self._options.max_queue_rows}); retry later or add instances"
            )
        self._queue.append((X, answer))
        self._queued_rows += n
        if not self._flush_scheduled:
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._flush_scheduled = True
            wait = self._options.max_wait_ms / 1000.0
            if wait > 0 and self._queued_rows < self._options.max_batch_rows:
                loop.call_later(wait, self._flush)
            else:
                loop.call_soon(self._flush)

    def _checked(self, X: np.ndarray, d: int) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise InvalidInput(f"expected a matrix [n, {d}], got shape {list(X.shape)}")
        n, width = X.shape
        if width != d:
            raise InvalidInput(
                f"rows have {width} features; model {self.model!r} has d={d} (shape [n, {d}])"
            )
        if n == 0:
            raise InvalidInput(f"no rows: expected shape [n, {d}] with n >= 1")
        if n > self._options.max_queue_rows:
            raise InvalidInput(
                f"{n} rows in one request; at most {self._options.max_queue_rows} "
                "(--max-queue-rows), split it"
            )
        if X.dtype != np.float32:
            if X.dtype.kind not in "fiu":
                raise InvalidInput(f"rows must be numbers, got dtype {X.dtype}")
            with np.errstate(over="ignore", invalid="ignore"):
                X = X.astype(np.float32)
        if not _all_finite(X):
            finite = np.isfinite(X)
            row, col = (int(v[0]) for v in np.nonzero(~finite))
            raise InvalidInput(
                f"row {row}, feature {col} is not finite (NaN, infinity, or beyond float32)"
            )
        return X

    def _flush(self) -> None:
        """One kernel call for the queued rows (up to max_batch_rows), answers split back."""
        self._flush_scheduled = False
        current = self._current
        if current is None:  # cannot happen once ready; kept for a model that vanished
            self._fail_queue(NotReady(f"model {self.model!r} is not loaded"))
            return
        state, d = current.state, current.d
        taken: list[tuple[np.ndarray, Answer]] = []
        rows = 0
        limit = self._options.max_batch_rows
        while self._queue and (not taken or rows + self._queue[0][0].shape[0] <= limit):
            X, answer = self._queue.popleft()
            self._queued_rows -= X.shape[0]
            if X.shape[1] != d:  # a replace changed d after the request was queued
                answer(InvalidInput(f"model {self.model!r} now has d={d}; resend with it"))
                continue
            taken.append((X, answer))
            rows += X.shape[0]
        if self._queue:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if not taken:
            return
        X = taken[0][0] if len(taken) == 1 else np.concatenate([t[0] for t in taken])
        labels, sq = model_assign(X, state, current.centers)
        distance, score = anomaly_scores(state, labels, sq, current.rms)
        distance32 = distance.astype(np.float32)
        # A model with no spread yet scores any distance as float64's largest: keep it finite.
        score32 = np.minimum(score, _F32_MAX).astype(np.float32)
        if self._metrics is not None:
            self._metrics.observe_batch(rows)
        version = state.version
        if len(taken) == 1:
            taken[0][1](Scores(labels, distance32, score32, version))
            return
        start = 0
        for Xi, answer in taken:
            stop = start + Xi.shape[0]
            answer(Scores(labels[start:stop], distance32[start:stop], score32[start:stop], version))
            start = stop

    def _fail_queue(self, exc: Exception) -> None:
        while self._queue:
            X, answer = self._queue.popleft()
            self._queued_rows -= X.shape[0]
            answer(exc)
