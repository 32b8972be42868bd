# The customer-pulse image: `pulse worker`, `pulse notifier`, `pulse simulate`,
# `pulse topics create`, and the demo webhook receiver (deploy/webhook-receiver).
# Built by docker-compose.yml (context: the repository root); deploy/kubernetes runs it too.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY processors ./processors
COPY streams ./streams
COPY deploy/webhook-receiver ./deploy/webhook-receiver
RUN pip install --no-cache-dir . && useradd --system --uid 10001 pulse \
    && mkdir -p /var/lib/pulse && chown pulse /var/lib/pulse
USER pulse
# The Faust shell creates its data directory in the working directory at start: a directory
# the unprivileged user owns (an emptyDir on Kubernetes, where the root filesystem is read-only).
WORKDIR /var/lib/pulse
ENV PULSE_WEB_HOST=0.0.0.0 \
    PULSE_WEB_PORT=6066
EXPOSE 6066
CMD ["pulse", "worker"]
