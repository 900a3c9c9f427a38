"""The fixture's own promise: without a MariaDB server it fails and says what to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_missing_server_says_to_run_make_test(tmp_path):
    # A PATH with Python and nothing else: no mariadbd, no mariadb-install-db.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{HERE / 'test_api.py'}::test_create_get_list_delete"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "mariadbd, mariadb-install-db, mariadb not found" in done.stdout
    assert "Run `make test`, which installs the packages" in done.stdout
