"""Launch the panoptic segmentation lifecycle node on a camera topic.

Examples::

    ros2 launch panoptic_ros panoptic.launch.py image:=/camera/color/image_raw
    ros2 launch panoptic_ros panoptic.launch.py namespace:=front image:=/front/image_raw \
        input_transport:=compressed params_file:=/path/to/my_panoptic.yaml rviz:=true

With ``autostart: true`` (the default in config/panoptic.yaml) the node configures and
activates itself; with ``autostart: false`` drive it through its lifecycle services
(``ros2 lifecycle set /<namespace>/panoptic_segmentation configure``).
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "panoptic_ros"


def generate_launch_description() -> LaunchDescription:
    """Node with its parameters file, the image topic remapped, RViz optional."""
    share = FindPackageShare(PACKAGE)
    namespace = LaunchConfiguration("namespace")
    image = LaunchConfiguration("image")
    args = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its topics"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image); with "
                              "input_transport:=compressed, <image>/compressed is used"),
        DeclareLaunchArgument("input_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed "
                              "(sensor_msgs/CompressedImage, JPEG or PNG)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config",
                                                                  "panoptic.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start RViz2 showing the overlay"),
    ]
    node = LifecycleNode(
        package=PACKAGE,
        executable="panoptic_node",
        name="panoptic_segmentation",
        namespace=namespace,
        output="screen",
        parameters=[LaunchConfiguration("params_file"),
                    {"input_transport": LaunchConfiguration("input_transport")}],
        remappings=[("image", image), ("image/compressed", [image, "/compressed"])],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        namespace=namespace,
        arguments=["-d", PathJoinSubstitution([share, "rviz", "panoptic.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*args, node, rviz])
