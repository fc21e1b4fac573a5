# The proxy image: runtime dependencies only, started with the production command, as a
# non-root user. PYTHON_IMAGE names the base (scripts/docker-standins builds a local stand-in
# where Docker Hub is out of reach).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && useradd --system --no-create-home --uid 10001 redis-cache-proxy
COPY proxy ./proxy
COPY gunicorn.conf.py .env ./
# .env's loopback addresses suit a host, not a container: here the proxy listens on every
# interface of the container, and Docker decides what reaches it (see the README).
ENV PROXY_HOST=0.0.0.0
USER redis-cache-proxy
EXPOSE 8080 6380
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
