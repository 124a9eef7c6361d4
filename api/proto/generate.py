"""Generate the gRPC modules beside grpc_predict_v2.proto: `python -m api.proto.generate`.

The generated modules are committed, so running streamkm needs no code generator;
tests/test_api_grpc.py regenerates them and fails when they differ from what is committed.
grpcio-tools is pinned in pyproject.toml because its version is written into the output, and
the generated code requires a protobuf runtime at least as new (here 6.31.1) and grpcio at least
as new as grpcio-tools.

One change is made to protoc's output: the messages are built in a descriptor pool of their own
instead of protobuf's default pool. Any other library that carries the same protocol's messages
(tritonclient does, as package `inference`) would otherwise collide with ours in one process
("duplicate symbol 'inference.ServerLiveRequest'").
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO = Path(__file__).resolve().parent / "grpc_predict_v2.proto"
ROOT = PROTO.parents[2]  # imports then read `from api.proto import ...`
GRPCIO_TOOLS_VERSION = "1.78.0"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")

_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("
_NOT_CHECKED_IN = "# NO CHECKED-IN PROTOBUF GENCODE\n"
_CHECKED_IN = "# Checked in; regenerate with `python -m api.proto.generate`.\n"


class GenerateError(RuntimeError):
    """protoc failed, or the installed grpcio-tools is not the pinned one."""


def generate() -> dict[str, str]:
    """The text of each generated module, by file name."""
    from importlib.metadata import version

    from grpc_tools import protoc

    installed = version("grpcio-tools")
    if installed != GRPCIO_TOOLS_VERSION:
        raise GenerateError(
            f"grpcio-tools {installed} is installed; the committed code comes from "
            f"{GRPCIO_TOOLS_VERSION} (pip install grpcio-tools=={GRPCIO_TOOLS_VERSION})"
        )
    proto = str(PROTO.relative_to(ROOT))
    with tempfile.TemporaryDirectory() as out:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / proto),
        ]
        if protoc.main(args) != 0:
            raise GenerateError(f"protoc failed on {proto}")
        produced = Path(out) / PROTO.parent.relative_to(ROOT)
        texts = {name: (produced / name).read_text() for name in GENERATED}
    pb2 = texts["grpc_predict_v2_pb2.py"]
    if _DEFAULT_POOL not in pb2:
        raise GenerateError("protoc's output no longer registers the file as expected")
    texts["grpc_predict_v2_pb2.py"] = pb2.replace(_DEFAULT_POOL, _OWN_POOL).replace(
        _NOT_CHECKED_IN, _CHECKED_IN
    )
    return texts


def main() -> None:
    """Write the generated modules beside the .proto."""
    for name, text in generate().items():
        (PROTO.parent / name).write_text(text)
        print(f"wrote {PROTO.parent / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
