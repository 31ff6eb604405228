"""Backends: load a model file, report its signature, execute batched numpy inputs.

Backends never import the web framework or the scheduler; the scheduler calls
``Backend.execute`` from one of its instance threads.
"""
