"""Keeps the terminal readable: library INFO chatter (Orbax, grain) is dropped, warnings kept."""

import logging

from absl import logging as absl_logging

_QUIET_PACKAGES = ("/orbax/", "/grain/", "/etils/")


class _LibraryInfoFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(package in record.pathname for package in _QUIET_PACKAGES)


def quiet_library_logs() -> None:
    """Installs the filter on absl's handler; call once at the start of a command."""
    absl_logging.get_absl_handler().addFilter(_LibraryInfoFilter())
