"""kubeinfer operator: reconciles ``InferenceModel`` resources into serving Deployments.

Layers, importing downward only::

    handlers.py   kopf wiring (the only module that imports kopf)
    reconcile/    desired objects, status conditions (pure)
    render/       spec -> Kubernetes manifests (pure)
    api/          pydantic models of the custom resources (-> crds/)
    k8s/          the only package that talks to the Kubernetes API
"""

__version__ = "0.1.0"
