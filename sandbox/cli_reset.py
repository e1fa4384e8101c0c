"""`fintech-sandbox reset` (`make reset`): back to the seeded demo state, and `run --fresh`.

With the sandbox running, the gateway's `POST /sandbox/reset` (regulator key) resets every
service and the gateway in place. With nothing running, the services' SQLite databases in the
data folder are deleted (each seeds itself afresh on the next `make run`) and the gateway's
participants are put back to the seeded set, with a `reset` entry appended to its audit log:
the log is kept either way. `run --fresh` deletes every database in the folder, the log too.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from sandbox.topology import GATEWAY, SERVICES

SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
RESET_TIMEOUT_S = 120.0


def database_files(data_dir: Path, names: list[str]) -> list[Path]:
    """The SQLite files (with WAL and shared-memory companions) of these services that exist."""
    return [path for name in names for suffix in SQLITE_SUFFIXES
            if (path := data_dir / f"{name}.sqlite3{suffix}").exists()]


def wipe_databases(data_dir: Path) -> list[Path]:
    """Delete every service's and the gateway's database in `data_dir` (logs stay): `run --fresh`."""
    files = database_files(data_dir, [spec.name for spec in SERVICES if spec.has_database])
    for path in files:
        path.unlink()
    return files


def _answering(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def reset(data_dir: Path, port_offset: int = 0) -> int:
    gateway_port = GATEWAY.port + port_offset
    if _answering(gateway_port):
        return reset_running(f"http://127.0.0.1:{gateway_port}")
    running = [f"{spec.name} (port {spec.port + port_offset})" for spec in SERVICES
               if spec.kind == "service" and _answering(spec.port + port_offset)]
    if running:
        print(f"The gateway does not answer on port {gateway_port}, but {', '.join(running)} do: stop the "
              "sandbox (Ctrl-C in its terminal) or start it whole, then reset again.", file=sys.stderr)
        return 1
    return reset_offline(data_dir)


def reset_running(base_url: str) -> int:
    """POST /sandbox/reset with the regulator's key (GATEWAY_REGULATOR_KEY, else the demo key)."""
    from sandbox.gateway.main import GatewaySettings

    key = GatewaySettings().regulator_key
    try:
        response = httpx.post(f"{base_url}/sandbox/reset", headers={"X-API-Key": key}, timeout=RESET_TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"The gateway at {base_url} did not answer the reset: {exc!r}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            problem = response.json()
            why = f"{problem.get('title')}: {problem.get('detail')}"
        except ValueError:
            why = response.text[:500]
        print(f"Not reset ({response.status_code}) — {why}", file=sys.stderr)
        return 1
    result = response.json()
    print(f"Sandbox reset through {base_url} in {result['took_ms']:.0f} ms: epoch {result['epoch']} begins "
          f"at audit entry {result['audit_index']} (the log is kept and still verifies).")
    for svc in result["services"]:
        removed = sum(svc["deleted"].values())
        seeded = ", ".join(f"{n} {table}" for table, n in svc["seeded"].items()) or "nothing to seed"
        print(f"  {svc['service']:<12} {removed} rows removed; seeded: {seeded}; clock {svc['clock']}")
    print(f"  {'gateway':<12} {result['participants']} seeded participants "
          f"({result['participants_removed']} admitted since removed); clock {result['reset_at']}")
    reconciled = result["intents_reconciled"]
    if reconciled:
        print("  open money movements reconciled first: "
              + ", ".join(f"{n} {verdict}" for verdict, n in reconciled.items()))
    return 0


def reset_offline(data_dir: Path) -> int:
    """Nothing is running: delete the services' databases, start a new epoch in the gateway's."""
    from sandbox.gateway.main import GatewaySettings
    from sandbox.gateway.models import GatewayModel
    from sandbox.gateway.reset import reset_gateway_offline
    from services.common.db import Database, database_url

    services = [spec.name for spec in SERVICES if spec.kind == "service"]
    files = database_files(data_dir, services)
    for path in files:
        path.unlink()
    print(f"The sandbox is not running: reset offline in {data_dir}.")
    deleted = sorted({path.name.split(".sqlite3")[0] for path in files})
    if deleted:
        print(f"  deleted the databases of {', '.join(deleted)} ({len(files)} files); each seeds itself "
              "afresh on the next `make run`")
    else:
        print("  no service databases to delete")
    gateway_db = data_dir / f"{GATEWAY.name}.sqlite3"
    if gateway_db.exists():
        settings = GatewaySettings()
        db = Database(database_url(None, data_dir, GATEWAY.name), GatewayModel.metadata)
        try:
            epoch, index = reset_gateway_offline(db, settings.seed_demo_data, datetime.now(UTC))
        finally:
            db.dispose()
        print(f"  gateway: participants back to the seeded set; its audit log is kept, epoch {epoch} "
              f"begins at entry {index} (`make verify-log` checks it)")
    return 0
