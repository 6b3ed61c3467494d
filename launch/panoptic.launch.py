"""Launch the panoptic segmentation lifecycle node on a camera topic.

Examples::

    ros2 launch panoptic_ros panoptic.launch.py image:=/camera/color/image_raw
    ros2 launch panoptic_ros panoptic.launch.py namespace:=front image:=/front/image_raw \
        input_transport:=compressed params_file:=/path/to/my_panoptic.yaml rviz:=true

With ``autostart: true`` (the default in config/panoptic.yaml) the node configures and
activates itself; with ``autostart: false`` drive it through its lifecycle services
(``ros2 lifecycle set /<namespace>/panoptic_segmentation configure``).

Large frames between processes (Fast DDS): a best-effort camera's frames larger than Fast DDS's
512 KiB shared-memory segment (640x480 rgb8 is 900 KiB) are lost unless the *camera's* process
has a larger segment. ``fastdds_profile:=<file>`` gives this launch's node one (for its own
large outputs to best-effort subscribers); give the camera driver the same file through
``FASTDDS_DEFAULT_PROFILES_FILE`` (see the README), or make the camera publish reliably: the
node's ``qos_reliability: auto`` then subscribes reliably, which repairs lost fragments.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
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
        DeclareLaunchArgument("fastdds_profile", default_value="",
                              description="Fast DDS XML profile for the node's process (e.g. "
                              "<share>/panoptic_ros/fastdds_loopback.xml: a 32 MiB shared-memory "
                              "segment, UDP on loopback only); empty = the environment's"),
    ]
    profile = SetEnvironmentVariable(
        "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("fastdds_profile"),
                                                "' != ''"])))
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
    return LaunchDescription([*args, profile, node, rviz])
