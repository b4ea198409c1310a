"""Entry point: `python -m secret_backend` and the `datadog-secret-backend` console script."""

import os
import sys


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
    # Leave without the interpreter's shutdown: the answer is written, and finalising the
    # modules of a cloud SDK costs tens of milliseconds; provider calls abandoned at the
    # deadline must not delay the exit either (their threads are never joined).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
