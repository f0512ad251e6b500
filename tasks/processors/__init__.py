"""Message processors: what each route's messages are turned into. See registry.py and base.py.

Importing this package registers every processor (the worker and the bridge both do).
"""

from tasks.processors import echo, feedback, reasoner, transcribe  # noqa: F401 - registers the processors
from tasks.processors.registry import (
    PROCESSORS,
    Processor,
    UnknownProcessor,
    get_processor,
    task_id_for,
)

__all__ = ["PROCESSORS", "Processor", "UnknownProcessor", "get_processor", "task_id_for"]
