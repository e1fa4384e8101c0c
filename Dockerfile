# One image for every service; docker-compose.yml picks the app with its command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY sandbox ./sandbox
RUN pip install --no-cache-dir . && useradd --create-home sandbox
USER sandbox
EXPOSE 8000 8001 8002 8003 8004 8005
