# featureflow: pipeline + explorer on CPU. Build: docker build -t featureflow .
# Run the demo and serve it: docker run -p 8000:8000 featureflow
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first and pinned to the CPU wheel, so the resolver never pulls CUDA packages
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY backend backend
COPY app app
COPY frontend frontend
COPY configs configs
COPY scripts scripts
RUN pip install --no-cache-dir -e . && npm --prefix frontend ci --no-audit --no-fund
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
VOLUME /app/data
CMD ["bash", "scripts/demo.sh"]
