"""Command line: read the Agent's request on stdin, answer on stdout."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import BinaryIO

from secret_backend import __version__
from secret_backend.deadline import Deadline, process_age
from secret_backend.errors import ExitCode, RequestError
from secret_backend.protocol import (
    AGENT_OUTPUT_LIMIT,
    MAX_REQUEST_BYTES,
    encode_response,
    parse_request,
)

log = logging.getLogger("secret_backend")

PROG = "datadog-secret-backend"
# Subcommands live in their own modules, imported only when used: "name": "module:function".
SUBCOMMANDS: dict[str, str] = {
    "check": "secret_backend.check:main",
    "check-permissions": "secret_backend.permissions:main",
}

DESCRIPTION = """\
Secret backend for the Datadog Agent (secret_backend_command). Reads the Agent's JSON request
on stdin and writes one JSON object with a value or an error for every handle on stdout.

modes:
  typed              the request carries "type" and "config" (secret_backend_type and
                     secret_backend_config in datadog.yaml)
  multi-backend      no "type": backends come from datadog-secret-backend.yaml next to the
                     executable (or --config PATH); handles are <backend_id>:<secret_key>
  provider prefixes  --with-provider-prefixes [ROOT_DIR]: file@/abs/path,
                     k8s_secret@namespace/name/key, or a bare file name under ROOT_DIR
"""

EPILOG = """\
exit codes: 0 answered (per-handle errors are in the JSON), 1 internal error, 2 bad arguments,
3 invalid request on stdin, 4 request too large, 5 a check failed.
Debug logging (never secret values): --debug or DD_SECRET_BACKEND_LOG_LEVEL=debug.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line on stderr, as the Agent logs it.
        sys.stderr.write(f"{PROG}: {message} (see --help)\n")
        sys.exit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--debug", action="store_true", help="log backends, handles and timings on stderr"
    )
    parser.add_argument(
        "--config",
        "-config",
        metavar="PATH",
        help=f"multi-backend YAML file (default: {'{executable dir}'}/datadog-secret-backend.yaml)",
    )
    parser.add_argument(
        "--with-provider-prefixes",
        nargs="?",
        const="",
        default=None,
        metavar="ROOT_DIR",
        help="provider-prefix mode; bare handles are files under ROOT_DIR",
    )
    return parser


LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(debug: bool) -> None:
    """Logs go to stderr, which the Agent logs and flares collect: never log a value."""
    level_name = os.environ.get("DD_SECRET_BACKEND_LOG_LEVEL", "").strip().lower()
    level = logging.DEBUG if debug else LOG_LEVELS.get(level_name, logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def run(
    argv: Sequence[str],
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        module_name, _, func = SUBCOMMANDS[argv[0]].partition(":")
        return int(getattr(importlib.import_module(module_name), func)(list(argv[1:])))

    args = build_parser().parse_args(argv)
    if args.version:
        sys.stdout.write(f"{PROG} {__version__}\n")
        return ExitCode.OK
    setup_logging(args.debug)
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    started = time.monotonic() - process_age()

    try:
        request = parse_request(stdin.read(MAX_REQUEST_BYTES + 1))
    except RequestError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return exc.code

    deadline = Deadline.from_timeout(request.timeout, started)
    handles = list(dict.fromkeys(request.secrets))
    from secret_backend import modes
    from secret_backend.resolver import resolve

    if args.with_provider_prefixes is not None:
        mode = "provider-prefix"
        routes, slots = modes.prefix_mode(handles, args.with_provider_prefixes or None)
    elif args.config is not None:
        mode = f"multi-backend ({args.config})"
        routes, slots = modes.file_mode(handles, args.config)
    elif request.has_type:
        mode = f"typed ({request.type})"
        routes, slots = modes.typed_mode(handles, request.type, request.config)
    else:
        path = modes.default_config_path()
        mode = f"multi-backend ({path})"
        routes, slots = modes.file_mode(handles, path)
    if request.has_type and (args.config is not None or args.with_provider_prefixes is not None):
        log.debug("command-line mode wins over the request's type %r", request.type)
    log.debug(
        "protocol %s, %d handles (%d distinct), mode %s, timeout %gs, %.0f ms left",
        request.version,
        len(request.secrets),
        len(handles),
        mode,
        request.timeout,
        deadline.remaining() * 1000,
    )

    answers = resolve(handles, routes, slots, deadline)
    output = encode_response(answers)
    if len(output) > AGENT_OUTPUT_LIMIT:
        log.warning(
            "the answer is %d bytes, over the Agent's default secret_backend_output_max_size "
            "(%d): raise it in datadog.yaml",
            len(output),
            AGENT_OUTPUT_LIMIT,
        )
    stdout.write(output)
    stdout.flush()
    failed = sum(1 for a in answers.values() if not isinstance(a, str))
    log.debug(
        "answered %d handles (%d errors) in %.1f ms since process start",
        len(answers),
        failed,
        (time.monotonic() - started) * 1000,
    )
    return ExitCode.OK
