"""`fintech-sandbox verify-log`: verify the gateway's audit log straight from its database,
or through a running gateway's /sandbox/audit/verify. Exit 0 when intact, 1 when broken."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandbox.gateway import repository
from sandbox.gateway.auditlog import verify_chain
from sandbox.gateway.models import GatewayModel
from services.common.db import Database, database_url


def main(argv: list[str] | None = None) -> int:
    from sandbox.gateway.main import GatewaySettings

    parser = argparse.ArgumentParser(prog="fintech-sandbox verify-log", description=__doc__)
    parser.add_argument("--database-url", help="the gateway's database (default: GATEWAY_DATABASE_URL, "
                        "else the SQLite file under --data-dir)")
    parser.add_argument("--data-dir", help="the sandbox data folder (default: GATEWAY_DATA_DIR or .sandbox-data)")
    parser.add_argument("--url", help="verify through a running gateway instead, e.g. http://127.0.0.1:8000")
    parser.add_argument("--regulator-key", help="with --url (default: GATEWAY_REGULATOR_KEY or the demo key)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `fintech-sandbox verify-log -- --data-dir ...`
        argv = argv[1:]
    args = parser.parse_args(argv)
    settings = GatewaySettings()

    if args.url:
        import httpx

        response = httpx.get(f"{args.url.rstrip('/')}/sandbox/audit/verify", timeout=60,
                             headers={"X-API-Key": args.regulator_key or settings.regulator_key})
        if response.status_code != 200:
            print(f"the gateway answered {response.status_code}: {response.text}", file=sys.stderr)
            return 2
        result = response.json()
        ok, size, head = result["ok"], result["size"], result["head_hash"]
        broken = result["first_broken"]
        index, reason = (broken["index"], broken["reason"]) if broken else (None, None)
    else:
        data_dir = args.data_dir or settings.data_dir
        url = database_url(args.database_url or settings.database_url, Path(data_dir), "gateway")
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            print(f"no gateway database at {url.removeprefix('sqlite:///')}", file=sys.stderr)
            return 2
        db = Database(url, GatewayModel.metadata)
        try:
            db.create_tables()  # a log from before a column was added (epoch) reads as the gateway reads it
            result = verify_chain(repository.audit_rows(db.engine))
        finally:
            db.dispose()
        ok, size, head = result.ok, result.size, result.head_hash
        index, reason = (result.first_broken.index, result.first_broken.reason) if result.first_broken else (None, None)

    if ok:
        print(f"audit log intact: {size} entries, head hash {head}")
        return 0
    print(f"audit log BROKEN at entry {index}: {reason}")
    print(f"the {size} entries before it verify; their head hash is {head}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
