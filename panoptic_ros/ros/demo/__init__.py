"""The live demo: synthetic camera -> panoptic node -> monitor, scored against ground truth.

ROS processes: :mod:`.camera` (``panoptic_demo_camera``), :mod:`.monitor`
(``panoptic_monitor``) and :mod:`.launcher` (``panoptic-ros demo``: starts the node and the
camera, hosts the monitor). ROS-free, testable without a graph: :mod:`.pairing` (messages of
one frame matched by header, bounded buffers), :mod:`.scoring` (live PQ, latency, rate; COCO
files of every pair), :mod:`.sheet` (the contact sheet's frames and panels) and :mod:`.report`
(the output folder's names, status line, summary). Nothing is imported here, so importing a
ROS-free module does not load rclpy.
"""
