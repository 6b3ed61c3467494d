"""Launch one panoptic node serving several cameras with one model.

Example (four cameras whose drivers publish /front/image_raw, /left/image_raw, ...)::

    ros2 launch panoptic_ros multi_camera.launch.py \
        front:=/front/image_raw left:=/left/image_raw right:=/right/image_raw \
        rear:=/rear/image_raw

The node subscribes ``<camera>/image`` for each name of its ``cameras`` parameter (remapped
here to the drivers' topics) and publishes every output under ``~/<camera>/`` (e.g.
``/panoptic_segmentation/front/panoptic``), each with its own frame's header. The newest frame
of every camera runs through the model as one batch; ``max_batch`` caps a batch and the
cameras are then served round robin. Memory and rates: bench/bench_cameras.py.
"""

from launch.actions import DeclareLaunchArgument
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

PACKAGE = "panoptic_ros"
CAMERAS = ("front", "left", "right", "rear")


def generate_launch_description() -> LaunchDescription:
    """One node, four cameras, each camera's image topic a launch argument."""
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its topics"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config",
                                                                  "panoptic.yaml"]),
                              description="node parameters (YAML)"),
        *(DeclareLaunchArgument(name, default_value=f"/{name}/image_raw",
                                description=f"image topic of the {name} camera")
          for name in CAMERAS),
    ]
    node = LifecycleNode(
        package=PACKAGE,
        executable="panoptic_node",
        name="panoptic_segmentation",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {"cameras": list(CAMERAS)}],
        remappings=[(f"{name}/image", LaunchConfiguration(name)) for name in CAMERAS],
    )
    return LaunchDescription([*args, node])
