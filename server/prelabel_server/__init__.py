"""The prelabel server: a transport-neutral engine (``engine``) and its gRPC front (``grpc_api``)."""
