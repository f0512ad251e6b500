# One image for every Conduit process; docker-compose.yml picks the command.
FROM python:3.11-slim

# libsndfile and ffmpeg decode audio for transcription; espeak-ng backs the speech helpers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY . .

RUN useradd --uid 10001 --no-create-home conduit
USER conduit
ENV PYTHONUNBUFFERED=1
EXPOSE 8000 5555
