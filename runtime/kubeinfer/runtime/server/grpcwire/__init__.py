"""gRPC over HTTP/2, served by kubeinfer itself on asyncio (no grpc.aio per call).

``frames``: HTTP/2 frame and HPACK encoding (pure); ``headers``: HPACK decoding with a
cache of repeated header blocks; ``connection``: one client connection (frames, flow
control, streams, the gRPC message framing); ``server``: the listening server, the
dispatch of a stream to a servicer method and the handler's context. Why hand-written
rather than the ``h2`` library: ``bench/h2_overhead.py``.
"""
