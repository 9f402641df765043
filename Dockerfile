# featureflow: pipeline + explorer on CPU. Build: docker build -t featureflow .
# Run the demo and serve it: docker run -p 8000:8000 featureflow
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# exact versions from requirements.lock; torch first, from the CPU index, so no CUDA packages are pulled
COPY requirements.lock ./
RUN pip install --no-cache-dir -c requirements.lock torch --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY featureflow featureflow
COPY configs configs
COPY scripts scripts
RUN pip install --no-cache-dir -c requirements.lock -e ".[pipeline]" && npm --prefix featureflow/explorer ci --no-audit --no-fund
ENV HOST=0.0.0.0 PORT=8000 FEATUREFLOW_VENV=system
EXPOSE 8000
VOLUME /app/data
CMD ["bash", "scripts/demo.sh"]
