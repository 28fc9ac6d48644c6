"""What the user is told when something is wrong: ``UserError``, which the command line turns into one line and a
non-zero exit, and ``count``, which words the numbers in such messages."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, and nothing has been written yet."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops and the last good checkpoint stays as it was."""


def count(n: int | float, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes, for messages: ``count(1, "epoch")`` is "1 epoch",
    ``count(3, "batch", "batches")`` "3 batches"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
