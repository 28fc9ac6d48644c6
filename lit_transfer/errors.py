"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, and nothing has been written yet."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops and the last good checkpoint stays as it was."""
