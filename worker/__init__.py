"""The Celery worker: ``celery -A worker worker`` starts it with the app built from settings."""

from worker.celery_app import DEFAULT_QUEUE, app, create_celery, queue_names

__all__ = ["DEFAULT_QUEUE", "app", "create_celery", "queue_names"]
