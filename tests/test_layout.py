from __future__ import annotations

import pkgutil
import subprocess
import sys

import fedhei


def test_the_core_imports_no_flower() -> None:
    modules = [info.name for info in pkgutil.walk_packages(fedhei.__path__, prefix="fedhei.") if not info.name.endswith("__main__")]
    code = "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flwr'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "fedhei.federation.client_round" in modules and "fedhei.cli.main" in modules
    assert result.stdout.strip() == "[]"


def test_the_flower_apps_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import fedhei, strategies, clients; from strategies.server_app import app; from clients.client_app import app as c; print(type(app).__name__, type(c).__name__)"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.split() == ["ServerApp", "ClientApp"]
