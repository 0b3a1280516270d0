"""The sweeper: finish or undo what requests that died left on device rows.

A request that dies (Lambda's timeout, a lost network, out of memory) leaves its lease to
expire, and maybe an intent or retiring certificates. The device's next request recovers them;
the sweeper does it for devices nobody asks about again. It finds rows with an expired lease in
the sparse sweep index, oldest first, in bounded batches, takes each row's lease as an
administrator would, recovers, and gives the lease back (dropping rows never provisioned).
Running it twice, or alongside requests, is safe: every step is idempotent and the lease keeps
one worker per device.

A row whose recovery keeps failing goes to the back of the queue after each run that tried it,
and is parked after ``MAX_SWEEP_ATTEMPTS`` (lease.py): it never starves the rows behind it.
What a revoke, release or claim left unfinished is finished here, and the device's session is
ended as the request would have.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioning.domain.budget import FORWARD_RESERVE_SECONDS, Budget
from provisioning.domain.errors import Conflict, NotFound, ProvisioningError
from provisioning.domain.models import Release, System
from provisioning.lifecycle.lease import DeviceTask, Recovery
from provisioning.observability import logger
from provisioning.ports import Services

SWEEPER = System("sweeper")
BATCH = 25
PARKED_LISTED = 100  # the parked count saturates here: the alarm needs more than zero


@dataclass
class SweepReport(Recovery):
    """What one run found and fixed (the metric the runbook explains)."""

    devices_seen: int = 0
    leases_released: int = 0
    skipped: int = 0
    # Rows the sweeper has given up on (all of them, not only this run's): an alarm watches it.
    parked_total: int = 0
    parked_devices: tuple[str, ...] = ()


def sweep(services: Services, budget: Budget, run_id: str, batch: int = BATCH) -> SweepReport:
    report = SweepReport()
    with services.budgets.running(budget):
        now = int(services.clock().timestamp())
        for dsn in services.store.due(now, batch):
            if not budget.allows(FORWARD_RESERVE_SECONDS):
                break
            report.devices_seen += 1
            task = DeviceTask(services, SWEEPER, dsn, budget, f"{run_id}:{dsn}")
            try:
                # Recovery waits: the claim below only takes the lease; the recover() call
                # then releases it (or drops a row that was never provisioned).
                task.take_lease(must_exist=True)
            except (Conflict, NotFound):
                report.skipped += 1  # a request holds it now, or it is gone: not ours to fix
                continue
            except ProvisioningError as error:
                logger.warning("sweeper could not claim", extra={"code": error.code})
                report.skipped += 1
                continue
            # What a revoke, release or claim that died left ends the session too (lease.py).
            report += task.recover(Release.DELETE)
            report.leases_released += 1
    try:
        report.parked_devices = tuple(services.store.parked(PARKED_LISTED))
        report.parked_total = len(report.parked_devices)
    except ProvisioningError as error:
        logger.warning("sweeper could not count parked devices", extra={"code": error.code})
    logger.info("sweep finished", extra=vars(report))
    return report
