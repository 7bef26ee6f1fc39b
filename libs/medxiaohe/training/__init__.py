"""What every training stage shares: its config (one dataclass, YAML plus command-line
overrides), its run (id, resolved config and metrics in the object store) and the
Kubernetes objects that run it on a cluster. The stages themselves live in
training-jobs/medxiaohe_training/."""
