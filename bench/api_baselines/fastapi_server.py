"""Baseline (a): scikit-learn behind FastAPI + uvicorn, the v2 infer call as a team writes it.

Run: python bench/api_baselines/fastapi_server.py CENTRES.npy --port 8000 [--model NAME]

A pydantic model of the Open Inference Protocol v2 request, a handler that builds a NumPy array,
calls `KMeans.predict` and returns the outputs as JSON. uvicorn picks uvloop and httptools when
they are installed (they are, for streamkm), its fastest setting; one worker process.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sklearn_model import fitted_kmeans, score_rows  # bench/api_baselines/sklearn_model.py


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]


def make_app(centers: np.ndarray, model: str) -> FastAPI:
    km = fitted_kmeans(centers)
    scale = np.ones(len(centers), dtype=np.float32)
    app = FastAPI()

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: InferRequest) -> dict[str, Any]:
        if model_name != model:
            raise HTTPException(404, f"model {model_name!r} is not served here")
        tensor = request.inputs[0]
        X = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        outputs = score_rows(km, X, scale)
        return {
            "model_name": model,
            "model_version": "1",
            "id": request.id,
            "outputs": [
                {
                    "name": "cluster",
                    "datatype": "INT32",
                    "shape": [len(X)],
                    "data": outputs["cluster"].tolist(),
                },
                {
                    "name": "distance",
                    "datatype": "FP32",
                    "shape": [len(X)],
                    "data": outputs["distance"].tolist(),
                },
                {
                    "name": "score",
                    "datatype": "FP32",
                    "shape": [len(X)],
                    "data": outputs["score"].tolist(),
                },
            ],
        }

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("centers", help="the model's centres, a .npy file")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="bench")
    args = p.parse_args()
    app = make_app(np.load(args.centers), args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
