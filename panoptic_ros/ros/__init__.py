"""ROS 2 glue: the node, message codecs, parameter specs, QoS, diagnostics, the live demo.

Only this package imports rclpy and ROS message packages.
"""
