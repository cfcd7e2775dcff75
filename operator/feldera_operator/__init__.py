"""A Kubernetes operator that makes Feldera pipelines and connectors match their declared state."""

__version__ = "0.1.0"
