"""Wire formats <-> ``InferRequest``/``InferResponse``: v2 JSON, Triton's binary tensor
extension, classification; gRPC messages live in ``grpc_codec``. No web framework here:
the server layer hands bytes and headers in and takes bytes out."""
