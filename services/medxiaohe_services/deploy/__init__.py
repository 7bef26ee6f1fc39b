"""Kubernetes manifests: rendering the chart and validating objects offline (no cluster)."""
