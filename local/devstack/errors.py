"""Errors the offline stack reports to its user as one line."""


class DevstackError(Exception):
    """A problem the user can fix (bad input, stack not up, port in use...)."""


class DeployError(DevstackError):
    """The template could not be deployed locally."""
