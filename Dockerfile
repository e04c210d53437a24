# agentload: the load generator and the built-in simulator in one image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY loadgen ./loadgen
RUN pip install --no-cache-dir .
EXPOSE 8000
ENTRYPOINT ["agentload"]
CMD ["sim", "--host", "0.0.0.0", "--port", "8000"]
