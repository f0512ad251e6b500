"""The web app: the counter-compatible quota API, readiness, and the live dashboard.

Served by gunicorn with threads (``gunicorn -k gthread 'web.app:create_app()'``): the dashboard's
WebSocket holds a thread per viewer. web/ may import every other package; nothing imports web/.
"""
