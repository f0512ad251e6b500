"""``python -m stack.honcho_start start -f Procfile ...``: honcho, with a stop grace period long
enough for a worker to finish what it is doing.

honcho sends SIGTERM to every process on Ctrl-C and SIGKILLs whatever still runs
``honcho.manager.KILL_WAIT`` (5 s) later. The web, bridge, Flower and emulators stop in well
under a second; a Celery worker's warm shutdown waits for its running tasks, and a task killed
mid-way is redelivered only after the broker's visibility timeout (minutes). honcho has no option
for it, so this sets the module's constant before running honcho's own ``main``.
"""

from __future__ import annotations

import honcho.manager
from honcho.command import main

# As long as the slowest process may need to stop cleanly: a worker finishing a short task.
STOP_GRACE_SECS = 30

if __name__ == "__main__":
    honcho.manager.KILL_WAIT = STOP_GRACE_SECS  # read by honcho at each check, so this takes
    main()
