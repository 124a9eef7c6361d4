"""Baseline (b): scikit-learn behind a plain `grpcio` server answering the protocol's ModelInfer.

Run: python bench/api_baselines/grpc_server.py CENTRES.npy --port 8001 [--model NAME]

The shape of a hand-written gRPC model server: the generated servicer of api/proto (the same
`inference.GRPCInferenceService` streamkm serves), `grpc.server` over a thread pool, one request
decoded into a NumPy array, `KMeans.predict`, outputs as raw little-endian bytes (what
tritonclient reads). On SIGTERM it prints the status codes it answered, as JSON, and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from sklearn_model import fitted_kmeans, score_rows  # bench/api_baselines/sklearn_model.py

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for api.proto
from api.proto import grpc_predict_v2_pb2 as pb
from api.proto import grpc_predict_v2_pb2_grpc as pb_grpc

_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_OUTPUTS = {"cluster": "INT32", "distance": "FP32", "score": "FP32"}


class KMeansServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, centers: np.ndarray, model: str) -> None:
        self.km = fitted_kmeans(centers)
        self.scale = np.ones(len(centers), dtype=np.float32)
        self.model = model
        self.codes: Counter[str] = Counter()
        self.lock = threading.Lock()

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            response = self._infer(request)
            code = "OK"
            return response
        except Exception:
            code = "UNKNOWN"
            raise
        finally:
            with self.lock:
                self.codes[code] += 1

    def _infer(self, request: Any) -> Any:
        tensor = request.inputs[0]
        dtype = _DTYPES[tensor.datatype]
        if request.raw_input_contents:
            X = np.frombuffer(request.raw_input_contents[0], dtype)
        else:
            X = np.array(tensor.contents.fp32_contents or tensor.contents.fp64_contents, dtype)
        X = X.reshape(list(tensor.shape)).astype(np.float32, copy=False)
        outputs = score_rows(self.km, X, self.scale)
        response = pb.ModelInferResponse(model_name=self.model, model_version="1", id=request.id)
        for name, datatype in _OUTPUTS.items():
            response.outputs.add(name=name, datatype=datatype, shape=[len(X)])
            values = outputs[name]
            response.raw_output_contents.append(
                values.astype(values.dtype.newbyteorder("<")).tobytes()
            )
        return response


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("centers", help="the model's centres, a .npy file")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="bench")
    p.add_argument("--workers", type=int, default=10, help="thread pool size (10)")
    args = p.parse_args()
    servicer = KMeansServicer(np.load(args.centers), args.model)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(1.0).wait()
    print(json.dumps(dict(servicer.codes)), flush=True)


if __name__ == "__main__":
    main()
