"""MedXIAOHE domain library: entities, corpus, mixture, evidence, report, rubric, eval, storage.

It never imports a transport (gRPC, Celery, Kubernetes); services adapt it.
"""

__version__ = "0.1.0"
