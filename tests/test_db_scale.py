"""The database under several processes at once: replicas starting together, any backend."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import inspect

from billing_core.db import current_revisions, make_engine
from tests.conftest import ROOT

MIGRATE = "import sys; from billing_core.db import open_database; open_database(sys.argv[1])"


def test_replicas_starting_together_migrate_once(blank_db_url: str) -> None:
    # Three dashboards/cron jobs starting at the same moment on an empty database: each runs
    # migrations on start, and none may fail on a table another one just created.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, blank_db_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], "\n".join(err for _, err in results)
    engine = make_engine(blank_db_url)
    assert current_revisions(engine)
    assert "invoice" in inspect(engine).get_table_names()
    engine.dispose()
