"""The ensemble router: a DAG of step models, each behind its own v2 endpoint, served as
one v2 model by the runtime's server layer (``kubeinfer route``)."""
