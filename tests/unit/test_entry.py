"""The console script's fast path for `bake resolve`."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
from bake.entry import defer_http_fetcher
defer_http_fetcher()
from tuf.ngclient import Updater, Urllib3Fetcher
assert "urllib3" not in sys.modules, "urllib3 was imported"
fetcher = Urllib3Fetcher(app_user_agent="probe")
assert "urllib3" in sys.modules and type(fetcher).__name__ == "Urllib3Fetcher"
assert hasattr(fetcher, "fetch")
print("ok")
"""


def test_tufs_http_fetcher_is_imported_only_when_used() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
