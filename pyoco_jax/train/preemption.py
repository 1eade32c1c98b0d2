"""Stopping on SIGTERM (preemption) at a step every process agrees on."""

import signal

import jax
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatch:
    """Says after each step whether to save and stop.

    One process: a SIGTERM handler sets a flag. Several processes: SIGTERM may reach only some
    hosts, and a host that stops alone leaves the others blocked in the next collective. JAX's
    preemption service (started by `jax.distributed.initialize`, it catches SIGTERM itself)
    tells every host about a notice and names the first step all of them can still reach; all
    save that same step's checkpoint and exit.
    """

    def __init__(self):
        self._shared = jax.process_count() > 1
        self._requested = False
        self._previous = None if self._shared else signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint and exiting.")
        self._requested = True

    def should_stop(self, step: int) -> bool:
        """Call once after every step, with the number of steps done, on every process."""
        if self._shared:
            if multihost_utils.reached_preemption_sync_point(step):
                logging.warning("A process was preempted: every process saves step %d and exits.", step)
                return True
            return False
        return self._requested

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
