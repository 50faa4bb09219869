"""[RT-1]: the web process cannot place orders. Importing every web entry point (views, API,
consumers, URLconf, ASGI app) loads no exchange client and no order-placing adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_web_entry_points_import_no_exchange_client():
    code = (
        "import os, sys, json\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'quantweb.settings_test')\n"
        "import django; django.setup()\n"
        "import quantweb.asgi, quantweb.urls, traders.views, traders.consumers, traders.api.views\n"
        "from django.urls import get_resolver; get_resolver().url_patterns\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('ccxt', 'pyupbit')"
        " or n.startswith('execution.adapters') or n in ('execution.services', 'execution.paper'))\n"
        "print(json.dumps(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
