"""``python -m lit_transfer``: LightningCLI's fit/validate/test/predict, and the tools beside it.

The tools are their own small programs with their own options (``python -m lit_transfer <tool> --help``): LightningCLI
subcommands are Trainer methods, and exporting a checkpoint or serving a page trains nothing.
"""

import importlib
import sys

TOOLS = {"demo": "lit_transfer.demo.serve", "export": "lit_transfer.export"}  # tool name -> module with main(args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        importlib.import_module(TOOLS[sys.argv[1]]).main(sys.argv[2:])
        return
    from lit_transfer.cli import main as lightning_cli

    lightning_cli()


if __name__ == "__main__":
    main()
