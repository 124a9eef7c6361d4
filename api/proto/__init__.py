"""The Open Inference Protocol's gRPC definition (KServe's grpc_predict_v2.proto, Apache-2.0)
and the modules generated from it by `python -m api.proto.generate`."""
