"""Command-line subcommands of ``panoptic-ros`` (see :mod:`panoptic_ros.cli`)."""
