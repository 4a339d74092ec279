"""`tcsession`: the operator's command, as Fabric ships `fab`: Invoke's Program running the tasks
of tcsession.tasks with its own core flags.

Invoke's core flags that mean nothing here (`--dry`, `--echo`, `--pty`, `--warn-only`,
`--prompt-for-sudo-password`, `--command-timeout`, `--hide`, `--config`, `--collection`, ...) are
neither shown nor accepted: given, they are refused like any unknown option. A wrong option or
command ends with one line saying what tcsession accepts, and exit code 2 (usage).
"""

from __future__ import annotations

import re
import sys

from invoke import Argument, Program
from invoke.exceptions import Exit, ParseError

#: The core flags tcsession keeps (Invoke's names): the rest are refused.
CORE = ("help", "version", "list", "complete", "print-completion-script", "inventory")
USAGE = 2


def version() -> str:
    from importlib import metadata  # noqa: PLC0415 (16 ms of every command's start otherwise)

    try:
        return metadata.version("tcsession")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "0+checkout"


class TcsessionProgram(Program):
    def print_version(self) -> None:  # read only when asked (importlib.metadata: 16 ms of each start)
        print(f"{self.name} {version()}")

    def core_args(self) -> list:
        """Invoke's core flags, and -i/--inventory before the command (`tcsession -i lab.toml status`):
        the inventory of every command on the line, unless a command names its own with -i."""
        return [*super().core_args(),
                Argument(names=("inventory", "i"), help="the inventory file for the commands that follow")]

    def parse_core(self, argv) -> None:
        super().parse_core(argv)
        given = self.args.inventory.value if "inventory" in self.args else None
        if given:
            import os

            from tcsession.workdir import INVENTORY_ENV

            os.environ[INVENTORY_ENV] = given  # -i before the command: in the order -i, env, ./hosts.toml

    def commands(self) -> list[str]:
        return sorted(self.collection.task_names) if getattr(self, "collection", None) else []

    def explain(self, e: ParseError) -> str:
        """Invoke's parse error as tcsession's one line."""
        text = str(e)
        m = re.fullmatch(r"No idea what '(.+)' is!", text)
        where = f" for {e.context.name}" if getattr(e, "context", None) is not None and e.context.name else ""
        if m and m.group(1).startswith("-"):
            flag = m.group(1)
            if where:
                what = f"unknown option {flag}{where}; `tcsession {e.context.name} --help` lists its options"
            else:
                what = (f"unknown option {flag}; tcsession's own options are -h/--help, -V/--version and "
                        "-l/--list (a command's options go after its name: `tcsession COMMAND --help`)")
        elif m:
            what = f"unknown command {m.group(1)!r}; the commands: {', '.join(self.commands())}"
        elif (p := re.fullmatch(r"'(.+)' did not receive required positional arguments: (.+)", text)):
            names = [n.strip(" '") for n in p.group(2).split(",")]
            what = (f"{p.group(1)} needs " + " and ".join("--mode=delta or --mode=msm" if n == "mode" else
                                                      f"--{n.replace('_', '-')}=..." for n in names)
                    + f"; `tcsession {p.group(1)} --help` lists its options")
        else:
            what = text[0].lower() + text[1:] if text else "cannot read the command line"
        return f"tcsession: {what}"

    def _refuse_pretend(self, args) -> None:
        given = [a for name, a in args.items() if name not in CORE and a.got_value]
        if given:
            a = given[0]
            flag = "/".join(("--" if len(n) > 1 else "-") + n for n in sorted(a.names, key=len))
            raise Exit(f"tcsession: unknown option {flag} (an option of Invoke's that tcsession does not use); "
                       "tcsession's own options are -h/--help, -V/--version and -l/--list"
                       + ("; `tcsession deploy --dry-run` previews a deploy" if "dry" in a.names else ""), USAGE)

    def parse_core_args(self) -> None:
        try:
            super().parse_core_args()
        except ParseError as e:
            raise Exit(self.explain(e), USAGE) from None
        self._refuse_pretend(self.core[0].args)

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as e:
            raise Exit(self.explain(e), USAGE) from None
        self._refuse_pretend(self.core_via_tasks.args)

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as e:
            raise Exit(self.explain(e), USAGE) from None

    def print_help(self) -> None:
        print(f"Usage: {self.binary} [--help] [--version] [--list] [-i FILE] COMMAND [OPTIONS] [COMMAND [OPTIONS] ...]")
        print()
        print("Build and run a Tomcat cluster whose sessions survive the loss of a node, over SSH, from an")
        print("inventory file (-i FILE, before or after the command; else $TCSESSION_INVENTORY; else hosts.toml).")
        print()
        print("Options:")
        print("  -h, --help [COMMAND]   this help, or a command's options")
        print("  -V, --version          tcsession's version")
        print("  -l, --list             the commands")
        print("  -i, --inventory FILE   the inventory for the commands that follow (default: $TCSESSION_INVENTORY,")
        print("                         else ./hosts.toml; a command's own -i FILE goes after its name)")
        print()
        self.list_tasks()


def program() -> TcsessionProgram:
    from tcsession.tasks import ns

    return TcsessionProgram(name="tcsession", binary="tcsession", namespace=ns)


def main(argv: list[str] | None = None) -> None:
    program().run(argv)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv)
