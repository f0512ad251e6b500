"""The bridge: Service Bus (or the local bus) into Celery, and results back out. See README.md."""
