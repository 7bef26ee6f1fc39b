"""Training stages (installed as ``medxiaohe_training``): one module per stage, each with one
config dataclass and a ``train(config, settings)`` function; ``medxiaohe-train`` runs them."""
