"""kubeinfer runtime: one model per process behind the KServe v2 / Triton protocol."""

__version__ = "0.1.0"
