"""The live demo as a launch file: synthetic camera -> panoptic node -> monitor.

The same three programs as ``panoptic-ros demo`` (which runs without ``ros2 launch``, for
machines with ROS 2 from pip), for robots with ROS 2 from apt::

    ros2 launch panoptic_ros demo.launch.py
    ros2 launch panoptic_ros demo.launch.py weights:=/path/model.pt device:=cuda rate:=30.0 \
        output_dir:=/tmp/panoptic_demo

All three live in ``namespace``: the camera publishes ``camera/image_raw`` and
``camera/ground_truth`` (with ``source:=sequences`` also ``camera/depth`` and
``camera/camera_info``), the node (``panoptic_segmentation``) reads ``camera/image_raw`` (and,
with ``use_depth`` on sequences, the depth and camera info: 3D per segment, ``~/points``,
``~/markers``), the monitor scores ``panoptic_segmentation/panoptic`` against the ground truth
(on sequences also the 3D centroid error), logs the running figures every 5 s, and on Ctrl-C
prints the summary (and writes it with the contact sheet and COCO panoptic files into
``output_dir`` when set). Discovery scope and domain come from the
environment (``ROS_AUTOMATIC_DISCOVERY_RANGE``, ``ROS_DOMAIN_ID``).
"""

from launch.actions import DeclareLaunchArgument
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "panoptic_ros"


def generate_launch_description() -> LaunchDescription:
    """Camera, lifecycle node (autostart) and monitor in one namespace."""
    arg = LaunchConfiguration
    namespace = arg("namespace")
    args = [
        DeclareLaunchArgument("namespace", default_value="panoptic_demo",
                              description="namespace of the camera, node and monitor"),
        DeclareLaunchArgument("weights", default_value="demo",
                              description="demo (bundled model) or a checkpoint path"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("rate", default_value="10.0", description="camera rate, Hz"),
        DeclareLaunchArgument("height", default_value="256", description="image height"),
        DeclareLaunchArgument("width", default_value="320", description="image width"),
        DeclareLaunchArgument("seed", default_value="2026",
                              description="scene seed (the demo model trained on 1000)"),
        DeclareLaunchArgument("source", default_value="sequences",
                              description="sequences (videos with depth and camera_info; "
                              "persistent ids) or scenes (independent images)"),
        DeclareLaunchArgument("output_dir", default_value="",
                              description="monitor results folder; empty = none"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution(
                                  [FindPackageShare(PACKAGE), "config", "panoptic.yaml"]),
                              description="node parameters (YAML)"),
    ]
    sequences = PythonExpression(["'", arg("source"), "' == 'sequences'"])
    camera = Node(
        package=PACKAGE,
        executable="panoptic_demo_camera",
        name="demo_camera",
        namespace=namespace,
        output="screen",
        parameters=[{"rate": arg("rate"), "height": arg("height"), "width": arg("width"),
                     "seed": arg("seed"), "source": arg("source")}],
    )
    node = LifecycleNode(
        package=PACKAGE,
        executable="panoptic_node",
        name="panoptic_segmentation",
        namespace=namespace,
        output="screen",
        parameters=[arg("params_file"), {"weights": arg("weights"), "device": arg("device"),
                                         "use_depth": sequences}],
        remappings=[("image", "camera/image_raw"), ("depth", "camera/depth"),
                    ("camera_info", "camera/camera_info")],
    )
    monitor = Node(
        package=PACKAGE,
        executable="panoptic_monitor",
        name="panoptic_monitor",
        namespace=namespace,
        output="screen",
        parameters=[{"output_dir": arg("output_dir"),
                     "video": sequences}],
    )
    return LaunchDescription([*args, camera, node, monitor])
