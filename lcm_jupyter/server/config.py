"""The extension's options as traitlets, made from the one table in `core/settings.py`.

Each option becomes a trait of `LCMOptions` (a mixin of `LCMExtension`) with the option's
help, which names its environment variable, and its default; a trait's default is its
`LCM_<NAME>` environment variable when that is set, parsed by the trait's own
`from_string` and checked like a configured value, so config files beat the environment,
and the environment beats the table. Nothing here imports Jupyter Server: `jupyter lcm`
reads the server's config files through `ExtensionOptions` without paying for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import traitlets
from jupyter_core.paths import jupyter_data_dir
from traitlets import HasTraits, TraitError, TraitType
from traitlets.config import Configurable
from traitlets.traitlets import MetaHasTraits

from ..core.settings import DATA_DIR, OPTIONS, Option, Settings

__all__ = ["ExtensionOptions", "LCMOptions", "build_settings", "option_trait"]


class _OptionTrait(TraitType):
    """A trait made from an Option: its help names the environment variable, and its
    default comes from that variable when it is set."""

    def __init__(self, option: Option, *args: Any, **kwargs: Any) -> None:
        self.option = option
        kwargs.update(help=f"{option.help} Env: {option.env}.", config=True)
        super().__init__(*args, **kwargs)

    def default(self, obj: Any = None) -> Any:
        raw = os.environ.get(self.option.env, "")
        if raw.strip():
            try:
                return self.validate(obj, self.from_string(raw.strip()))
            except (TraitError, ValueError) as exc:
                raise TraitError(f"{self.option.env}={raw!r}: {_reason(exc)}") from None
        if self.option.type is Path:
            return str(Path(jupyter_data_dir()) / self.option.default)
        return super().default(obj)

    def default_value_repr(self) -> str:
        if self.option.type is Path:
            return repr(f"{DATA_DIR}/{self.option.default}")
        return super().default_value_repr()

    def validate(self, obj: Any, value: Any) -> Any:
        value = super().validate(obj, value)  # type: ignore[misc]
        problem = self.option.problem(value)
        if problem is not None:
            owner = type(obj).__name__ if obj is not None else "LCMExtension"
            raise TraitError(f"{owner}.{self.name} {problem}")
        return value


# Named as traitlets' own, so that help reads `--LCMExtension.redis_timeout=<Float>`.
class Unicode(_OptionTrait, traitlets.Unicode):
    """A str or Path option."""


class Float(_OptionTrait, traitlets.Float):
    """A float option."""


class Integer(_OptionTrait, traitlets.Integer):
    """An int option."""


class Bool(_OptionTrait, traitlets.Bool):
    """A bool option; its variable also takes yes/no and on/off."""

    def from_string(self, s: str) -> bool:
        word = s.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{s!r} is not one of 1, 0, true, false, yes, no, on, off")


class Enum(_OptionTrait, traitlets.Enum):
    """An option with choices."""


class List(_OptionTrait, traitlets.List):
    """A list of str; its variable is comma-separated."""

    def from_string(self, s: str) -> list[str]:
        return [item.strip() for item in s.split(",") if item.strip()]


def option_trait(option: Option) -> TraitType:
    """The trait for `option`."""
    if option.choices:
        return Enum(option, option.choices, option.default)
    if option.type is tuple:
        return List(option, traitlets.Unicode(), list(option.default))
    if option.type is Path:
        return Unicode(option, "")
    kinds: dict[type, type[_OptionTrait]] = {str: Unicode, float: Float, int: Integer, bool: Bool}
    return kinds[option.type](option, option.default)


def _with_options(name: str, base: type, doc: str) -> Any:
    """A class with a trait per option of its own (the metaclass sets each one up as if
    it were written in the class body), so that help lists them under `name`."""
    namespace = {"__doc__": doc, "__module__": __name__, "__qualname__": name}
    return MetaHasTraits(name, (base,), namespace | {o.name: option_trait(o) for o in OPTIONS})


if TYPE_CHECKING:  # the traits are made from the table: to a type checker their values are Any

    class LCMOptions(HasTraits):
        def __getattr__(self, name: str) -> Any: ...

    class ExtensionOptions(Configurable):
        def __getattr__(self, name: str) -> Any: ...

else:
    LCMOptions = _with_options(
        "LCMOptions",
        HasTraits,
        "The options of `core.settings.OPTIONS` as traits: `LCMExtension`'s configuration.",
    )
    # Named as the extension, so that it reads the config files' `LCMExtension` section and
    # `--help-all` lists `--LCMExtension.<option>`, without importing Jupyter Server.
    ExtensionOptions = _with_options(
        "LCMExtension",
        Configurable,
        "LCMExtension's options alone, configured from the same section of the same config "
        "files (for `jupyter lcm`).",
    )


def build_settings(options: HasTraits) -> Settings:
    """The frozen Settings from an object with the option traits (LCMExtension)."""
    return Settings.from_options(
        {o.name: getattr(options, o.name) for o in OPTIONS if o.field_name is not None}
    )


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text[0].lower() + text[1:] if text else type(exc).__name__
