"""Package exception types (ROS-free)."""


class PanopticRosError(Exception):
    """Base class of the package's own exceptions."""


class UserError(PanopticRosError):
    """A problem with what the user supplied (path, file contents, option value).

    The command-line tool prints these as one line and exits with code 2.
    """


class ModelLoadError(PanopticRosError):
    """A model, checkpoint or its weights could not be loaded; the message says why."""
