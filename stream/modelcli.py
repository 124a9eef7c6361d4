"""`streamkm model import|show|export`: the served model, read from and written to its topics.

No running service is needed: the model is what `<model>.updates` says, read the way every
instance reads it (the latest snapshot, then the log after it, into a `ModelReplica`).

The model's schema (named fields with their transforms, standard scaling; DESIGN.md §7) travels
with it: `show` lists it, `export` writes it into the JSON file (see stream/modelfile.py) and
`import` publishes the file's. A replace from a file that says nothing of a schema (`.npy`,
`.csv`, JSON without "fields" and "scaler") keeps the model's, as it keeps its half-life, so
that swapping centres does not stop the instances serving it.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from engine import ModelState, Scaler
from model.files import EXPORT_FORMATS, CenterFile, ModelFileError, read_centers, write_centers
from model.log import open_model, publish_message
from model.messages import INIT, REPLACE, ModelParams, ModelReplica, encode_init
from model.options import MAX_DIM, MAX_K
from model.parts import MAX_RECORD_BYTES
from model.snapshots import model_document
from model.topics import (
    BrokerUnreachable,
    TopicError,
    TopicSpec,
    ensure_topics,
    partition_count,
    wait_for_broker,
)

from .config import (
    ExportOptions,
    ImportOptions,
    ModelOptions,
    Settings,
    ShowOptions,
)

__all__ = ["ModelExists", "NoModel", "read_model", "run_model"]

# A human table shows this many coordinates of each centre; `--json` shows them all.
_SHOWN_COORDINATES = 8


class ModelExists(Exception):
    """`model import` without --replace, for a model that already has an init."""


class NoModel(Exception):
    """`model show` or `export` for a model whose log holds no init yet."""


def run_model(action: str, options: ModelOptions) -> int:
    """Entry point of `streamkm model ACTION`: 0 done, 1 no model or Kafka failed, 2 refused."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Replaying the log re-logs every past re-seed; `show` lists them, so stay quiet about them.
    logging.getLogger("streamkm.model").setLevel(logging.ERROR)
    prog = f"streamkm model {action}"
    try:
        if isinstance(options, ImportOptions):
            print(asyncio.run(import_model(options)))
        elif isinstance(options, ShowOptions):
            print(asyncio.run(show_model(options)))
        elif isinstance(options, ExportOptions):
            print(asyncio.run(export_model(options)))
        else:
            raise TypeError(f"no model action takes {type(options).__name__}")
    except (ModelFileError, ModelExists, BrokerUnreachable, TopicError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except NoModel as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"{prog}: Kafka failed: {exc}", file=sys.stderr)
        return 1
    return 0


async def read_model(settings: Settings, kafka: dict[str, Any]) -> ModelReplica:
    """The model as every instance sees it now: the latest snapshot plus the log after it."""
    replica = ModelReplica()
    updates, _ = await open_model(
        replica, settings.updates_topic, settings.snapshots_topic, settings.model, kafka
    )
    await updates.stop()
    return replica


async def import_model(o: ImportOptions) -> str:
    """Publish the file's centres as an `init` (or a `replace`); returns what was done."""
    loaded = read_centers(o.file)  # a bad file is refused before anything touches Kafka
    _check_size(o.file, loaded)
    s = o.kafka_settings()
    kafka = s.kafka_client_kwargs()
    await _connect(s, o.connect_timeout)
    specs = [TopicSpec(s.updates_topic, 1), TopicSpec(s.snapshots_topic, 1, compact=True)]
    await ensure_topics(s.bootstrap, specs, kafka)
    replica = ModelReplica()
    updates, _ = await open_model(replica, s.updates_topic, s.snapshots_topic, s.model, kafka)
    try:
        if replica.params is not None and not o.replace:
            raise ModelExists(
                f"model {s.model!r} already exists (version {replica.version}, "
                f"k={replica.params.k}, d={replica.params.d}); pass --replace to swap its centres"
            )
        half_life = o.half_life
        if half_life is None and o.replace and replica.params is not None:
            half_life = replica.params.half_life  # a replace keeps the model's forgetting
        fields, scaler = _schema(o, loaded, replica)
        k, d = loaded.centers.shape
        params = ModelParams(
            k=k,
            d=d,
            half_life=half_life,
            fields=fields,
            scale="none" if scaler is None else "standard",
        )
        kind = REPLACE if o.replace else INIT
        state = ModelState.initial(loaded.centers, loaded.weights, scaler=scaler)
        origin = f"import of {Path(o.file).name} by {_who()}"
        offset = await _publish(s, kafka, kind, state, params, origin)
        # Read our own record back: only then do we know the model is what we published.
        await updates.catch_up()
        if replica.next_offset <= offset:
            raise TopicError(
                f"published at {s.updates_topic} offset {offset} but could not read it back"
            )
    finally:
        await updates.stop()
    if replica.base_offset is None or replica.base_offset < offset:
        raise ModelExists(
            f"another init reached model {s.model!r} first (updates offset "
            f"{replica.base_offset}); pass --replace to swap its centres for these"
        )
    version = next((e.version for e in replica.events if e.offset == offset), replica.version)
    verb = "replaced the centres of" if kind == REPLACE else "imported"
    return (
        f"{verb} model {s.model!r}: {k} centres of d={d} ({_schema_words(params)}) from {o.file}, "
        f"version {version} (updates offset {offset})"
    )


def _check_size(file: str, loaded: CenterFile) -> None:
    """Refuse a model larger than any streamkm serves (`serve` refuses such --k and --dim)."""
    k, d = loaded.centers.shape
    if k > MAX_K or d > MAX_DIM:
        raise ModelFileError(
            f"{file}: {k} centres of d={d}; streamkm serves models of at most k={MAX_K} centres "
            f"of d={MAX_DIM}"
        )


def _schema(
    o: ImportOptions, loaded: CenterFile, replica: ModelReplica
) -> tuple[tuple[str, ...] | None, Scaler | None]:
    """The schema to publish: the file's, or the model's for a replace from a file without one."""
    params, state = replica.params, replica.state
    if loaded.has_schema or not o.replace or params is None or state is None:
        return loaded.fields, loaded.scaler
    if params.fields is None and state.scaler is None:
        return None, None
    d = loaded.centers.shape[1]
    if d != params.d:
        raise ModelFileError(
            f"{o.file}: model {o.model!r} has {_schema_words(params)} of d={params.d}, which a "
            f"replace keeps, but these centres have d={d}; give the new schema in a .json file "
            '("fields", "scaler")'
        )
    return params.fields, state.scaler


async def show_model(o: ShowOptions) -> str:
    """The current model as a table, or as JSON with exact floats (`--json`)."""
    replica = await _existing_model(o)
    if o.json:
        return model_document(o.model, replica, {}).decode()
    return _table(o.model, replica)


async def export_model(o: ExportOptions) -> str:
    """Write the current centres to the file; returns what was written."""
    suffix = Path(o.file).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise ModelFileError(
            f"{o.file}: export writes {' or '.join(EXPORT_FORMATS)}, not {suffix or '(none)'!r}"
        )
    replica = await _existing_model(o)
    state, params = replica.state, replica.params
    assert state is not None and params is not None
    extra = {
        "weights": state.weights.tolist(),
        "model": o.model,
        "version": state.version,
        "half_life": params.half_life,
    }
    write_centers(o.file, state.centers, extra, fields=params.fields, scaler=state.scaler)
    return (
        f"wrote {state.k} centres of d={state.d} ({_schema_words(params)}) of model {o.model!r} "
        f"version {state.version} to {o.file}"
    )


async def _existing_model(o: ModelOptions) -> ModelReplica:
    s = o.kafka_settings()
    kafka = s.kafka_client_kwargs()
    await _connect(s, o.connect_timeout)
    try:
        await partition_count(s.bootstrap, s.updates_topic, kafka)
    except TopicError:
        raise NoModel(
            f"model {s.model!r} does not exist on {s.bootstrap} (no topic {s.updates_topic}); "
            "serve it or `streamkm model import` one"
        ) from None
    replica = await read_model(s, kafka)
    if not replica.ready:
        raise NoModel(f"model {s.model!r} has no init yet; serve it or import one")
    return replica


async def _connect(s: Settings, timeout: float) -> None:
    await wait_for_broker(s.bootstrap, timeout, s.kafka_client_kwargs())


async def _publish(
    s: Settings,
    kafka: dict[str, Any],
    kind: str,
    state: ModelState,
    params: ModelParams,
    origin: str,
) -> int:
    """Append an init or replace message to the updates log (in parts if large); returns the
    offset it takes effect at."""
    producer = AIOKafkaProducer(**kafka, acks="all", max_request_size=MAX_RECORD_BYTES)
    await producer.start()
    try:
        return await publish_message(
            producer, s.updates_topic, kind, encode_init(state, params, origin)
        )
    finally:
        await producer.stop()


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def _table(model: str, replica: ModelReplica) -> str:
    state, params = replica.state, replica.params
    assert state is not None and params is not None
    half_life = "none" if params.half_life is None else f"{params.half_life:g} records"
    lines = [
        f"model {model}: version {state.version} (updates offset {replica.next_offset}), "
        f"last update {_when(replica.updated_at)}",
        f"k={state.k}, d={state.d}, half-life {half_life}, "
        f"re-seed below {params.reseed_fraction:g} of the heaviest weight",
        f"re-seeded clusters: {replica.reseeds}; replaces: {replica.replaces}",
        "",
        *_schema_table(params, state.scaler),
    ]
    if replica.events:
        lines += ["", f"{'version':>8}  {'event':<8} {'clusters':<24} at"]
        for e in replica.events:
            clusters = f"all {len(e.clusters)}" if e.kind != "reseed" else str(list(e.clusters))
            lines.append(f"{e.version:>8}  {e.kind:<8} {clusters:<24} {_when(e.at)}")
    units = " (original units)" if state.scaler is not None else ""
    lines += ["", f"{'cluster':>8}  {'weight':>12}  centre{units}"]
    for j, (w, c) in enumerate(zip(state.weights, state.centers, strict=True)):
        shown = ", ".join(f"{x:.4g}" for x in c[:_SHOWN_COORDINATES])
        more = (
            f", ... ({state.d - _SHOWN_COORDINATES} more)" if state.d > _SHOWN_COORDINATES else ""
        )
        lines.append(f"{j:>8}  {w:>12.6g}  [{shown}{more}]")
    return "\n".join(lines)


def _schema_words(params: ModelParams) -> str:
    """`13 named fields, --scale standard` or `a features vector, --scale none`."""
    read = "a features vector" if params.fields is None else f"{len(params.fields)} named fields"
    return f"{read}, --scale {params.scale}"


def _schema_table(params: ModelParams, scaler: Scaler | None) -> list[str]:
    """The schema: each field with its transform and, when scaled, its mean and scale."""
    lines = [f"schema: {_schema_words(params)}"]
    if params.fields is None and scaler is None:
        return lines
    if params.fields is None:
        names = [f"[{t}]" for t in range(params.d)]
        transforms = ["-"] * params.d
    else:
        split = [f.partition(":") for f in params.fields]
        names = [name for name, _, _ in split]
        transforms = [t or "-" for _, _, t in split]
    width = max(8, *(len(n) for n in names))
    head = f"{'feature':<{width}}  {'transform':<9}"
    if scaler is None:
        rows = [f"{n:<{width}}  {t:<9}" for n, t in zip(names, transforms, strict=True)]
        return [*lines, head, *rows]
    lines[0] += f" (from {scaler.weight:.6g} records)"
    rows = [
        f"{n:<{width}}  {t:<9}  {m:>12.6g}  {sc:>12.6g}"
        for n, t, m, sc in zip(names, transforms, scaler.mean, scaler.scale, strict=True)
    ]
    return [*lines, f"{head}  {'mean':>12}  {'scale':>12}", *rows]


def _when(at: float | None) -> str:
    if at is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
