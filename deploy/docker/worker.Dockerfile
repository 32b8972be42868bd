# The customer-pulse image: `pulse worker`, `pulse simulate`, `pulse topics create`.
# Built by docker-compose.yml (context: the repository root).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY processors ./processors
COPY streams ./streams
RUN pip install --no-cache-dir . && useradd --system --uid 10001 pulse
USER pulse
ENV PULSE_WEB_HOST=0.0.0.0 \
    PULSE_WEB_PORT=6066
EXPOSE 6066
CMD ["pulse", "worker"]
