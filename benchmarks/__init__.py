"""Benchmarks: our code path and its anchor measured side by side in one command.

Anchors that cannot share this environment (medspaCy needs numpy<2, datatrove numpy>=2) run in
side environments that ``anchors.ensure_env`` creates on first use, fed the same inputs."""
