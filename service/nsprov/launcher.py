"""The ``nsprov`` console script: a client command starts without the server's CLI.

``nsprov run`` sits on a CI job's critical path: every millisecond before CMD
starts is the job's. ``cli`` builds ``serve``'s and ``rollout``'s flags from the
Settings at import time (settings, bundle, logging: about 30 ms of CPU), which a
client command never uses. So the script looks at its first argument: a client
command runs from ``client.cli`` alone; anything else (``serve``, ``--help``,
``--version``, shell completion, which must see every command) goes to ``cli``,
whose group holds the same client commands, so both paths behave alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

COMPLETE_VARIABLE = "_NSPROV_COMPLETE"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nsprov``: a client command directly, everything else through ``cli.main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    from nsprov.client import cli as client_cli

    if args and args[0] in client_cli.COMMAND_NAMES and COMPLETE_VARIABLE not in os.environ:
        return client_cli.main(args)
    from nsprov import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
