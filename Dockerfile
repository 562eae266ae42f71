# syntax=docker/dockerfile:1
# CPU image (default target `cpu`): serves from ONNX Runtime, torch is not installed.
#   docker build -t prelabel:cpu .
#   docker run -p 50051:50051 prelabel:cpu
# GPU image: PyTorch on CUDA.
#   docker build --target gpu -t prelabel:gpu .
#   docker run --gpus all -p 50051:50051 prelabel:gpu

ARG PYTHON_VERSION=3.11

# Stage 1: export every model package's ONNX file (needs torch; thrown away afterwards).
FROM python:${PYTHON_VERSION}-slim AS export
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir '.[server]' \
 && for package in models/*/card.json; do prelabel export "$(dirname "$package")" --check-images samples/camvid || exit 1; done

# GPU image: both backends; `auto` picks torch on the GPU.
FROM python:${PYTHON_VERSION}-slim AS gpu
WORKDIR /app
COPY --from=export /src /src
RUN pip install --no-cache-dir '/src[server]' && mkdir -p /app/models \
 && for package in /src/models/*/card.json; do cp -r "$(dirname "$package")" /app/models/; done && rm -rf /src
ENV PRELABEL_HOST=0.0.0.0 PRELABEL_PORT=50051 PRELABEL_HEALTH_PORT=50052 PRELABEL_MODEL_REPOSITORY=/app/models PRELABEL_BACKEND=auto
EXPOSE 50051 50052
# The health port answers while large requests hold every RPC thread of the main one.
HEALTHCHECK --interval=30s --timeout=5s CMD prelabel health --server "127.0.0.1:${PRELABEL_HEALTH_PORT}" --timeout 3
CMD ["prelabel", "serve"]

# CPU image: ONNX Runtime only, no torch.
FROM python:${PYTHON_VERSION}-slim AS cpu
WORKDIR /app
COPY --from=export /src /src
RUN pip install --no-cache-dir '/src[serve-onnx]' && mkdir -p /app/models \
 && for package in /src/models/*/card.json; do cp -r "$(dirname "$package")" /app/models/; done && rm -rf /src \
 && ! python -c "import torch" 2>/dev/null
ENV PRELABEL_HOST=0.0.0.0 PRELABEL_PORT=50051 PRELABEL_HEALTH_PORT=50052 PRELABEL_MODEL_REPOSITORY=/app/models PRELABEL_BACKEND=onnx
EXPOSE 50051 50052
# The health port (plaintext even where the main port serves TLS) answers while large requests
# hold every RPC thread of the main one.
HEALTHCHECK --interval=30s --timeout=5s CMD prelabel health --server "127.0.0.1:${PRELABEL_HEALTH_PORT}" --timeout 3
CMD ["prelabel", "serve"]
