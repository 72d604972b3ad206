"""What every `jupyter lcm` command shares: the server's configuration and one-line errors.

Each command is a `jupyter_core` application. It loads the config files Jupyter Server
loads for the extension (`jupyter_config`, `jupyter_lcm_jupyter_config` and
`jupyter_server_config`, `.py` and `.json`, from the Jupyter config path, the server's
file winning as it does in the server), then the command line; the `LCM_*` variables are
the options' defaults. So `c.LCMExtension.db_path` in `jupyter_server_config.py` is the
database every command uses, as it is the server's.

A mistake in the command line is a `UsageError` (one line, exit 2); a command that cannot
do its work raises `CommandError` with the fix (one line, exit 1). Neither prints a
traceback.
"""

from __future__ import annotations

import os
import re
import sys
from functools import cached_property
from typing import Any

from jupyter_core.application import JupyterApp, base_flags
from traitlets import Enum, TraitError
from traitlets.config import Application, Config
from traitlets.config.loader import KVArgParseConfigLoader

from .._version import __version__
from ..core.settings import Settings
from ..server.config import ExtensionOptions, build_settings

# In this order: a later file wins, and the server's config beats the extension's own file
# as it does when the server links the extension.
CONFIG_FILES = ("jupyter_config", "jupyter_lcm_jupyter_config", "jupyter_server_config")
HELP_ARGS = frozenset({"-h", "--help", "--help-all", "--version", "-V"})


class UsageError(Exception):
    """The command line is wrong: said in one line, exit code 2."""


class CommandError(Exception):
    """The command cannot do its work: one line saying why and what to do, exit code 1."""


def cli_error(message: str) -> None:
    """Print an error as every command does: one line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


class Subcommand:
    """A subcommand's entry in `LCMCommand.subcommands`: a fresh app each run (traitlets
    would reuse a singleton from an earlier run in the same process), and its class, whose
    options the parent knows to find the subcommand after them."""

    def __init__(self, cls: type[LCMCommand]) -> None:
        self.cls = cls

    def __call__(self, parent: Application) -> LCMCommand:
        return self.cls(parent=parent)


def subcommands(**commands: type[LCMCommand]) -> dict[str, tuple[Subcommand, str]]:
    """`subcommands` for an LCMCommand: name -> the command's class."""
    return {
        name: (Subcommand(cls), cls.description.strip().splitlines()[0])
        for name, cls in commands.items()
    }


_KVParser: Any = KVArgParseConfigLoader.parser_class  # traitlets' own (a private class)


class _OneLineParser(_KVParser):
    """traitlets' argument parser, whose errors are one line (no usage block)."""

    def error(self, message: str) -> Any:
        raise UsageError(message)


class _Loader(KVArgParseConfigLoader):
    parser_class = _OneLineParser


class LCMCommand(JupyterApp):
    """A `jupyter lcm` command (subclasses set `name`, `description` and `aliases`)."""

    version = __version__
    classes = [ExtensionOptions]
    raise_config_file_errors = True
    # Positional arguments a command takes, e.g. ("NAME",); more or fewer is a usage error.
    positional: tuple[str, ...] = ()
    # `jupyter lcm keys` alone does what `jupyter lcm keys list` does.
    default_subcommand: str | None = None

    aliases = {
        "log-level": "Application.log_level",
        "config": "JupyterApp.config_file",
        "db-path": "LCMExtension.db_path",
    }
    flags = {k: v for k, v in base_flags.items() if k not in ("generate-config", "y")}

    @property
    def command(self) -> str:
        """This command as typed: `jupyter lcm keys create`."""
        return self.name.replace("jupyter-lcm", "jupyter lcm").replace("-", " ")

    # -- the server's configuration ---------------------------------------------------------

    def migrate_config(self) -> None:
        """Nothing: a command does not migrate IPython 3 config as `jupyter` apps may."""

    def load_config_file(self, suppress_errors: bool = True) -> None:  # type: ignore[override]
        """The server's config files for the extension, then `--config FILE` if given."""
        paths = self.config_file_paths
        try:
            for name in CONFIG_FILES:
                Application.load_config_file(self, name, path=paths)
            if self.config_file:
                folder, name = os.path.split(os.path.abspath(self.config_file))
                Application.load_config_file(self, name, path=folder)
        except TraitError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:  # a config file that does not run: say which, in a line
            raise CommandError(f"cannot load the Jupyter config: {exc}") from None

    @cached_property
    def options(self) -> ExtensionOptions:
        """The extension's options as the server sees them (config files, LCM_*, flags)."""
        return ExtensionOptions(parent=self)

    @cached_property
    def settings(self) -> Settings:
        """The options as the Settings the server would run with."""
        try:
            return build_settings(self.options)
        except (TraitError, ValueError) as exc:
            raise CommandError(
                f"bad LCMExtension option: {exc} (from the Jupyter config files, the LCM_* "
                "variables or the command line)"
            ) from None

    # -- the command line -------------------------------------------------------------------

    def _create_loader(self, argv, aliases, flags, classes):
        return _Loader(argv, aliases, flags, classes=classes, log=self.log)

    def parse_command_line(self, argv: list[str] | None = None) -> None:
        """Options anywhere among the positional arguments, as with argparse; a
        subcommand after options (`keys --db-path X list`) is found too."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if self.subcommands and not (set(argv) & HELP_ARGS):
            argv = self._subcommand_first(argv)
        if (self.subcommands and argv and argv[0] in self.subcommands) or set(argv) & HELP_ARGS:
            super().parse_command_line(argv)
            return
        options, positional = self._split(argv)
        super().parse_command_line(options)
        self.extra_args = positional
        if self.subcommands and positional:
            names = ", ".join(self.subcommands)
            raise UsageError(
                f"{self.command}: unknown command {positional[0]!r} (commands: {names}; "
                "--help for more)"
            )
        if len(positional) != len(self.positional):
            expected = " ".join(self.positional) or "no positional argument"
            got = " ".join(positional) or "none"
            raise UsageError(f"{self.command} takes {expected} (got: {got})")

    def update_config(self, config: Config) -> None:
        """As traitlets does, but a bad value is a one-line usage error naming its flag."""
        try:
            super().update_config(config)
        except TraitError as exc:
            raise UsageError(self._explain(exc, config)) from None

    def _explain(self, exc: TraitError, config: Config) -> str:
        for name, trait in self.traits(config=True).items():
            if f"'{name}' trait" not in str(exc):
                continue
            flag = next(
                (f"--{a}" for a, target in self.aliases.items() if target.endswith(f".{name}")),
                f"--{type(self).__name__}.{name}",
            )
            value = config.get(type(self).__name__, {}).get(name)
            if isinstance(trait, Enum):
                choices = ", ".join(map(str, trait.values or ()))
                return f"{flag}: invalid choice: {str(value)!r} (choose from {choices})"
            expected = re.search(r"expected (.+), not the \w+ (.+?)\.?$", str(exc))
            if expected:
                return f"{flag}: expected {expected[1]}, got {expected[2]}"
            return f"{flag}: {exc}"
        return str(exc)

    def _value_taking(self, *, subcommands: bool = False) -> set[str]:
        return _names(self._commands(subcommands), "aliases")

    def _flag_names(self, *, subcommands: bool = False) -> set[str]:
        return _names(self._commands(subcommands), "flags")

    def _commands(self, subcommands: bool) -> list[Any]:
        found: list[Any] = [self]
        if subcommands:
            found += [f.cls for f, _ in self.subcommands.values() if isinstance(f, Subcommand)]
        return found

    def _split(self, argv: list[str]) -> tuple[list[str], list[str]]:
        """(options with their values, positional arguments); unknown options refused."""
        valued, flags = self._value_taking(), self._flag_names()
        options: list[str] = []
        positional: list[str] = []
        args = iter(argv)
        for arg in args:
            if arg == "--":
                positional.extend(args)
                break
            if not arg.startswith("-") or arg == "-" or _is_number(arg):
                positional.append(arg)
                continue
            name, eq, _ = arg.lstrip("-").partition("=")
            if name in flags and not eq:
                options.append(arg)
            elif name in valued or "." in name:
                options.append(arg)
                if not eq:
                    value = next(args, None)
                    if value is None:
                        raise UsageError(f"{arg} needs a value ({self.command} --help)")
                    options.append(value)
            else:
                known = sorted(f"--{n}" for n in (valued | flags) if n not in base_flags)
                raise UsageError(
                    f"{self.command}: unknown option {arg.split('=')[0]} "
                    f"(options: {', '.join(known)}; --help for more)"
                )
        return options, positional

    def _subcommand_first(self, argv: list[str]) -> list[str]:
        """`keys --db-path X create NAME` as `keys create --db-path X NAME`; the default
        subcommand when none is named."""
        if argv and argv[0] in self.subcommands:
            return argv
        valued = self._value_taking(subcommands=True)
        skip = False
        for i, arg in enumerate(argv):
            if skip:
                skip = False
                continue
            if arg.startswith("-"):
                name, eq, _ = arg.lstrip("-").partition("=")
                skip = not eq and (name in valued or "." in name)
                continue
            if arg in self.subcommands:
                return [arg, *argv[:i], *argv[i + 1 :]]
            names = ", ".join(self.subcommands)
            raise UsageError(
                f"{self.command}: unknown command {arg!r} (commands: {names}; --help for more)"
            )
        if self.default_subcommand is not None:
            return [self.default_subcommand, *argv]
        return argv

    # -- running --------------------------------------------------------------------------

    def start(self) -> int:  # type: ignore[override]
        """Run the command; its exit code."""
        if self.subcommands:
            names = ", ".join(self.subcommands)
            raise UsageError(f"{self.command} needs a command: {names} (--help for more)")
        return 0


def _names(commands: list[Any], kind: str) -> set[str]:
    names: set[str] = set()
    for command in commands:
        for key in getattr(command, kind):
            names.update(key if isinstance(key, tuple) else (key,))
    return names


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True
