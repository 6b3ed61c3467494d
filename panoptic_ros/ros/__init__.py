"""ROS 2 glue: the node, message conversions, demo camera, live evaluator.

Only this package imports rclpy and ROS message packages.
"""
