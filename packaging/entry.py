"""Entry script of the frozen executable (PyInstaller runs this file as __main__).

It hands over to the same `main()` as `python -m secret_backend`, so the frozen build behaves
like the source tree. One shortcut: the Agent's `--version` probe (status page, flares) allows
one second, so answer it before importing the command line (argparse, logging, the protocol).
tests/test_binary.py checks that both paths print the same line.
"""

import sys

if sys.argv[1:] == ["--version"]:
    from secret_backend import __version__

    sys.stdout.write(f"datadog-secret-backend {__version__}\n")
    sys.exit(0)

from secret_backend.__main__ import main

sys.exit(main())
