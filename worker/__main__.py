"""``python -m worker dev|start|connect|console``: the agent configured from the environment only.

The same command line as a code-first agent (:class:`worker.agent.Agent`), see :mod:`worker.cli`.
"""

from __future__ import annotations

import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
