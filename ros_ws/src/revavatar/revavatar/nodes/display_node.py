"""`display_node`: Warp the restored face onto the outward display (display stage).

Thin on purpose: parameters, topics and the stage are all set up by
:class:`revavatar.ros.node.RosStageNode` from the graph description; see docs/nodes.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(args: Sequence[str] | None = None) -> int:
    """Run the node until shutdown; returns the exit status (2 on a user error)."""
    from revavatar.ros.node import run_stage_node  # noqa: PLC0415 - rclpy only when run

    return run_stage_node("display", args)


if __name__ == "__main__":
    sys.exit(main())
