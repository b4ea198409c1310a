"""Entry point: `python -m secret_backend` and the `datadog-secret-backend` console script."""

import os
import sys
import threading


def main() -> int:
    # Imported lazily so that `--version` costs as little as possible.
    from secret_backend.cli import run

    try:
        code = int(run(sys.argv[1:]))
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug: one line, no traceback, no data (it may hold secrets)
        sys.stderr.write(
            f"datadog-secret-backend: internal error ({type(exc).__name__}); "
            "please report it with the output of --debug\n"
        )
        code = 1
    if threading.active_count() > 1:
        # Provider calls abandoned at the deadline must not delay the exit: the answer is
        # already written, so leave without joining their threads.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
