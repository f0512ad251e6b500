"""The AI work: Azure OpenAI clients, completion, embedding, search, transcription, and the
message processors the bridge routes to. Depends on quota/ and settings/ only."""
