"""Workload profiles: the typed schema and the YAML loader."""
