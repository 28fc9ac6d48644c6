"""``python -m lit_transfer``: LightningCLI's fit/validate/test/predict, and the tools beside it.

The tools are their own small programs with their own options (``python -m lit_transfer <tool> --help``): LightningCLI
subcommands are Trainer methods, and exporting a checkpoint or serving a page trains nothing. ``--help`` (or no
command) lists the commands without importing torch; ``--version`` prints the versions and devices; every command
first checks that torchvision works with this torch (``command_line/setup_check.py``).
"""

import importlib
import sys

from lit_transfer.command_line import help, setup_check

TOOLS = {"demo": "lit_transfer.demo.serve", "export": "lit_transfer.export"}  # tool name -> module with main(args)


def main() -> None:
    if sys.argv[1:2] in ([], ["-h"], ["--help"]):  # the commands, before torch is imported (seconds)
        print(help.top_level())
        sys.exit(0 if sys.argv[1:] else 2)
    problem = setup_check.torchvision_problem()  # before anything imports torchvision
    if sys.argv[1:2] in (["--version"], ["-V"]):
        print(setup_check.version_report(problem))
    if problem:
        sys.exit(f"lit_transfer: error: {problem}")
    if sys.argv[1:2] in (["--version"], ["-V"]):
        return
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        importlib.import_module(TOOLS[sys.argv[1]]).main(sys.argv[2:])
        return
    from lit_transfer.cli import main as lightning_cli

    lightning_cli()


if __name__ == "__main__":
    main()
