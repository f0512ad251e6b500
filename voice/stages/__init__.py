"""The pipeline's stages, in call order: hearing (or transcription) → reply → speech → writer."""
