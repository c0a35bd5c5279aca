# One gateway node. Production runs it as a Fargate task behind an NLB (TLS terminated
# at the NLB); configure with GATEWAY_* environment variables (docs/operations.md).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/gateway gateway \
    && mkdir -p /var/lib/gateway && chown gateway /var/lib/gateway
COPY --from=build /install /usr/local
USER gateway
WORKDIR /var/lib/gateway
ENV GATEWAY_HOST=0.0.0.0 \
    GATEWAY_DATA_DIR=/var/lib/gateway/data \
    PYTHONUNBUFFERED=1
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2); sys.exit(0)"
CMD ["gateway", "serve"]
