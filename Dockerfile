# One image for every Conduit process; docker-compose.yml picks the command.
FROM python:3.11-slim

# No system packages: the soundfile, av (FFmpeg) and espeakng-loader wheels bundle the native
# libraries audio decoding and speech synthesis need.
WORKDIR /app
# Runtime dependencies only (no pytest, ruff, mypy ...), in their own layer so a code change
# does not reinstall them; then Conduit itself, which adds the conduit-* commands.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY . .
RUN pip install --no-cache-dir --no-deps .

RUN useradd --uid 10001 --no-create-home conduit
USER conduit
ENV PYTHONUNBUFFERED=1
EXPOSE 8000 8001 5555
