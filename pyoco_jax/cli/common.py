"""What every console script shares: one flag style, absolute paths, and user errors as one line.

Config overrides are `--config.key=value` on every command that has a config (a config file, or the
one saved in a checkpoint), parsed by `pyoco_jax.config_values`. A mistake the user can fix (a
`UserError`: bad config, flag, path or file) ends the command with one line naming what to change and
exit status 1; anything else is a bug and keeps its traceback.
"""

import sys
from collections.abc import Callable

from absl import app, flags

from pyoco_jax.cli.logs import quiet_library_logs
from pyoco_jax.errors import UserError
from pyoco_jax.paths import absolute

__all__ = ["absolute", "config_overrides", "run_cli"]

_OVERRIDE_PREFIX = "--config."
_overrides: list[str] = []


def config_overrides() -> list[str]:
    """The `key=value` overrides given on the command line, in order."""
    return list(_overrides)


def run_cli(name: str, main: Callable[[], None], *, takes_overrides: bool = True) -> None:
    """Parses the flags (and `--config.key=value` overrides) and runs `main()`, reporting user errors in one line."""

    def parse(argv: list[str]) -> list[str]:
        rest = []
        args = iter(argv[1:])
        for arg in args:
            if arg.startswith(_OVERRIDE_PREFIX):
                _overrides.append(arg if "=" in arg else f"{arg}={next(args, '')}")
            else:
                rest.append(arg)
        if _overrides and not takes_overrides:
            sys.exit(f"{name}: this command takes no config overrides; drop {_overrides[0]}")
        try:
            remaining = flags.FLAGS([argv[0], *rest])
        except flags.Error as err:
            sys.exit(f"{name}: {err} (see {name} --help)")
        if len(remaining) > 1:
            sys.exit(f"{name}: unexpected arguments {remaining[1:]} (flags are --name=value; see {name} --help)")
        return remaining

    def guarded(argv: list[str]) -> None:
        del argv
        quiet_library_logs()
        try:
            main()
        except UserError as err:
            sys.exit(f"{name}: {err}")

    app.run(guarded, flags_parser=parse)
