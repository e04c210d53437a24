# agentload: the load generator (Locust master or worker) and the built-in simulator in one
# image. profiles/ is part of the package (pyproject maps it to loadgen.builtin_profiles);
# agents/ holds the example custom agents that profiles load by path (agents/triage.yaml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY loadgen ./loadgen
COPY profiles ./profiles
COPY agents ./agents
RUN pip install --no-cache-dir .
# 8000 the simulator, 8089 Locust's web UI (master), 5557 master <-> workers, 9646 the
# master's Prometheus metrics (--prometheus-port).
EXPOSE 8000 8089 5557 9646
ENTRYPOINT ["agentload"]
CMD ["sim", "--host", "0.0.0.0", "--port", "8000"]
