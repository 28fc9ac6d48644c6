"""A command-line mistake as one line and its fix, instead of jsonargparse's usage dump and nested report.

jsonargparse reports what failed for every type a value could have had (a data option misspelt under subclass
mode reads "Does not validate against any of the Union subtypes ..."); what a newcomer needs is the option, what
is wrong with it, and the right form: a close option name (difflib), or an example for a list.
"""

from __future__ import annotations

import difflib
import inspect
import re

from lit_transfer.data import DigitsDataModule
from lit_transfer.data.folders import FolderDataModule

LIST_EXAMPLES = {"digits": "'[5,6,7]'", "classes": "'[cats,dogs]'", "callbacks": "'[...]'"}


def explain(message: str, argv: list[str], known: list[str]) -> str:
    """One or two lines for the parse error ``message`` of the command line ``argv``; ``known``: the option names
    the subcommand accepts (besides the data classes' own)."""
    command = argv[0] if argv else "fit"
    owners = {f"--data.{name}": cls.__name__ for cls in (DigitsDataModule, FolderDataModule) for name in params(cls)}
    if found := re.search(r"invalid choice: '([^']*)'", message):
        close = difflib.get_close_matches(found.group(1), ["fit", "validate", "test", "predict", "export", "demo"], 1)
        fix = f"did you mean {close[0]}?" if close else "see python -m lit_transfer --help"
        return f"unknown command {found.group(1)!r}: {fix}"
    option = None
    if found := re.search(r"unrecognized arguments: (\S+)", message):
        option = found.group(1).split("=")[0]
    elif found := re.search(r"Option '([\w.]+)' is not accepted", message):
        key = re.search(r'Parser key "([\w.]+)"', message)
        option = f"--{key.group(1) if key else 'data'}.{found.group(1)}"
    if option in owners:  # an option of the other kind of data
        return f"{option} is an option of {owners[option]}, not of the --data class chosen here: leave it out"
    if option:
        close = difflib.get_close_matches(option, [*known, *owners], n=1, cutoff=0.75)
        fix = f"did you mean {close[0]}?" if close else f"see python -m lit_transfer {command} --help"
        return f"unknown option {option}: {fix}"
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    key = ".".join(k for k in keys if k not in ("data", "model", "trainer") or len(keys) == 1)
    if keys and len(keys) > 1 and keys[0] in ("data", "model", "trainer"):
        key = f"{keys[0]}.{keys[-1]}"
    given = re.search(r"Got value: (.*)|Given value: (.*)", message)
    value = next((g for g in given.groups() if g), "").strip() if given else ""
    if "Expected a <class 'list'>" in message:
        example = LIST_EXAMPLES.get(key.rpartition(".")[2], "'[a,b]'")
        return f"--{key} takes a list, not {value!r}: write it as in YAML, e.g. --{key} {example}"
    if "File does not exist" in message:
        return f"--{key} names a file that does not exist ({message.split('File does not exist:')[-1].strip()})"
    if literal := re.search(r"Expected a typing\.Literal\[(.*?)\]", message):  # a value outside the choices
        choices = ", ".join(choice.strip(" '\"") for choice in literal.group(1).split(","))
        return f"--{key} is {value!r}: give one of {choices}"
    if expected := re.findall(r"Expected a <class '(\w+)'>", message):
        kinds = " or ".join(dict.fromkeys(k.replace("NoneType", "null") for k in expected))
        return f"--{key} takes {kinds}, not {value!r}: see python -m lit_transfer {command} --help"
    first = next((line.strip() for line in message.splitlines() if line.strip()), message)
    return f"{first}: see python -m lit_transfer {command} --help"


def params(cls: type) -> list[str]:
    return [name for name in inspect.signature(cls).parameters if name != "self"]
