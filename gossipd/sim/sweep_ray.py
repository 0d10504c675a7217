"""The Ray runner of a sweep: one Ray task per (cell, seed), results as they finish.

Ray is an optional extra (``pip install 'gossipd[ray]'``); this module imports
it only when a sweep actually runs, and ``require_ray`` turns its absence into a
one-line SweepError.

Without an address the runner starts a private local Ray (``address="local"``:
never an unrelated cluster that happens to be running) and shuts it down at the
end; with ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` it connects to an
existing cluster, whose nodes must have the same gossipd installed (tasks
import ``gossipd.sim.sweep.run_one`` by name).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gossipd.sim.config import SimulationConfig
from gossipd.sim.sweep import Finished, SweepError, run_one

INSTALL_HINT = "gossip sweep runs on Ray, which is not installed: pip install 'gossipd[ray]' (or add --local)"


def require_ray() -> None:
    """Raise SweepError with the install hint if Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SweepError(INSTALL_HINT) from None


@dataclass
class RayRunner:
    address: str | None = None  # None: start a local Ray for this sweep only
    num_cpus: int | None = None  # for the local Ray; None lets Ray count the cores
    temp_dir: str | None = None  # the local Ray's session and log directory (default /tmp/ray)

    def map(self, configs: Sequence[SimulationConfig]) -> Finished:
        require_ray()
        import ray

        self._init(ray)
        try:
            # One core per task: each simulation is single-threaded (run_one sets torch to 1 thread).
            # A task whose worker or node dies is retried (a seeded run gives the same result
            # again); an exception inside a simulation is a bug and is not.
            task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(run_one)
            refs: dict[Any, SimulationConfig] = {task.remote(c): c for c in configs}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    yield refs.pop(ref), ray.get(ref)
        finally:
            ray.shutdown()  # stops the local Ray we started; only disconnects from a cluster

    def _init(self, ray: Any) -> None:
        if self.address is None:
            # A private instance: no telemetry from a research tool, no dashboard to serve.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {"address": "local", "include_dashboard": False}
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            if self.temp_dir is not None:
                kwargs["_temp_dir"] = self.temp_dir
        else:
            kwargs = {"address": self.address}
        try:
            ray.init(log_to_driver=False, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            what = f"--address {self.address}: cannot reach Ray" if self.address else "cannot start a local Ray"
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SweepError(f"{what}: {first_line}") from None
