"""The product's wheel ships the product only: the Stripe double is its own distribution."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(source: Path, out: Path) -> list[str]:
    """Build from a copy of the checkout (a fresh clone's files: no stale ``build/``)."""
    copy = out / "src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "instance", "__pycache__")
        if source == ROOT else shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(copy)], check=True, cwd=out)
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_the_product_wheel_has_no_double(tmp_path):
    names = _build(ROOT, tmp_path)
    assert "crowdpower/plugins/stripe/plugin.py" in names
    assert "crowdpower/services/__init__.py" in names
    assert [n for n in names if "double" in n.lower()] == []
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(entry_points).decode()
    assert "stripe = crowdpower.plugins.stripe.plugin" in text and "double" not in text


def test_the_double_is_a_distribution_of_its_own(tmp_path):
    names = _build(ROOT / "stripe-double", tmp_path)
    assert "crowdpower_stripe_double/server.py" in names
    assert "crowdpower_stripe_double/fixtures.json" in names
    assert [n for n in names if n.startswith("crowdpower/")] == []
