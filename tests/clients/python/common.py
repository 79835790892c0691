"""What the Python suites of the client matrix share: printing one
canonical JSON line per step (crates/pgtrail/tests/clients.rs compares the
lines of a direct run with those of a run through `pgtrail proxy`)."""

import json
import sys


def step(name, result):
    """Prints one step's result; sorted keys so both runs print alike."""
    print(json.dumps({"step": name, "result": result}, sort_keys=True, default=str))
    sys.stdout.flush()


def error(e):
    """An error as the matrix compares it: the SQLSTATE and the message."""
    return {"sqlstate": getattr(e, "sqlstate", None), "error": type(e).__name__}
