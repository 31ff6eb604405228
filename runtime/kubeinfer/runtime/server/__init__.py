"""The server layer: HTTP (FastAPI + a raw ASGI infer route), gRPC, metrics, lifecycle."""
