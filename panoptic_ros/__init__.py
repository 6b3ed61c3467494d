"""panoptic_ros: panoptic segmentation for ROS 2 robots.

The generated message modules (``panoptic_ros.msg``) exist only in the installed copy of this
package. ``extend_path`` lets a source checkout placed first on ``sys.path`` (development loop,
``PYTHONPATH=.``) still find them in the installed copy.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
