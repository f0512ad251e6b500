"""Local stand-ins for Azure services that have no local emulator (dev and tests only).

``python -m emulators`` serves an Azure OpenAI and an Azure AI Search look-alike (see README.md):

    app.py            routes, auth, the charge → validate → answer pipeline
    ratelimit.py      Azure's per-deployment TPM/RPM limits and headers, in memory
    chat.py           deterministic chat completions, JSON and tool calls, streaming
    jsonschema_fill.py  values valid for a JSON Schema (structured outputs, tool arguments)
    embeddings.py     hashed word-feature embeddings with Azure's input limits
    audio.py          Whisper routes: decode, recognise, format
    recognizer.py     pocketsphinx speech recognition (phrase grammar, then open model)
    speech.py         espeak-ng text to speech, for tests and sample workloads
    control.py        latency, fault injection and counters behind /_emulator/*
    search/           Azure AI Search at /search: indexes in SQLite (FTS5 BM25), numpy vectors
"""
