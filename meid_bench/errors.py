"""The one exception type for bad user input.

Library code raises :class:`MeidBenchError` with a message that names the file, the line or field, what is wrong
and how to fix it. The command line prints that message on one line and exits with status 2, without a traceback.
"""


class MeidBenchError(Exception):
    """Bad input from the user (a file, an option, a folder): the message says what and how to fix it."""
