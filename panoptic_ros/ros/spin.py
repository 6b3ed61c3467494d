"""The ``main`` of a ROS 2 executable: init, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_main(
    make_node: Callable[[], Node],
    args: list[str] | None = None,
    make_executor: Callable[[], Executor] = SingleThreadedExecutor,
    on_stop: Callable[[Node], None] | None = None,
) -> int:
    """Run one node until interrupted (Ctrl-C, SIGTERM, or the context shut down).

    Args:
        make_node: builds the node (after ``rclpy.init``).
        args: command line (default ``sys.argv``; ``--ros-args`` are rclpy's).
        make_executor: builds the executor (after ``rclpy.init``).
        on_stop: called with the node once spinning has ended, before it is destroyed (final
            reports: use a plain ``rclpy.logging`` logger or print, rosout may be gone).

    Returns:
        0, the process exit code.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = make_node()
    executor = make_executor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A SIGTERM can shut the context down while the executor builds its wait set; rclpy
        # then raises RCLError ("the given context is not valid") instead of the shutdown
        # exception. That is a shutdown too; anything else is a real error.
        if rclpy.ok():
            raise
    finally:
        executor.shutdown()
        if on_stop is not None:
            on_stop(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
