"""User-facing errors: reported as one clear line and a non-zero exit, never a traceback."""


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint, command line).

    Entry points catch it, print ``error: <message>`` on one line and exit with ``exit_code``.
    """

    exit_code = 2
