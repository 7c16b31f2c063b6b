"""The Open Inference Protocol v2: a kind-neutral data plane (dataplane.py), its tensor codecs
(codec.py for JSON and binary HTTP bodies, grpc_codec.py for protobuf messages), and thin HTTP
(http.py) and gRPC (grpc.py) adapters over it."""
