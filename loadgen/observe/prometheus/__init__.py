"""Prometheus export of a run: metric families, the sink that feeds them, a worker-to-master
merge, the incremental text exposition and the /metrics server."""
