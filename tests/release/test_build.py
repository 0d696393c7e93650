"""`release build`'s refusals, which come before any work (the real build runs once, in
tests/release/test_release_cli.py), and its completeness check of the SBOM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ramparts.release.build import _add_hashes, build_release
from ramparts.release.manifest import ReleaseError

ROOT = Path(__file__).resolve().parents[2]


def test_a_release_directory_must_be_new_or_empty(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    (out / "ramparts-0.0.9-py3-none-any.whl").write_bytes(b"an older release")
    with pytest.raises(ReleaseError, match="is not empty: a release directory holds one release"):
        build_release(ROOT, out)
    assert [p.name for p in out.iterdir()] == ["ramparts-0.0.9-py3-none-any.whl"]


def test_the_project_root_must_hold_the_lock(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ReleaseError, match="not the project root"):
        build_release(tmp_path, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def sbom(*components: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"component": {"name": "ramparts", "version": "0.1.0"}},
        "components": [{"name": name, "version": version} for name, version in components],
    }


def test_every_installed_distribution_gets_the_hash_pip_installed() -> None:
    listed = sbom(("PyJWT", "2.10.1"), ("zope.interface", "7.2"))
    _add_hashes(
        listed,
        {
            "pyjwt": ("2.10.1", "a" * 64),
            "zope-interface": ("7.2", "b" * 64),
            "ramparts": ("0.1.0", "c" * 64),
        },
    )
    assert [c["hashes"] for c in listed["components"]] == [
        [{"alg": "SHA-256", "content": "a" * 64}],
        [{"alg": "SHA-256", "content": "b" * 64}],
    ]
    assert listed["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "c" * 64}]


@pytest.mark.parametrize(
    "installed",
    [{"stripe": ("12.0.0", "a" * 64)}, {"pyjwt": ("2.10.2", "a" * 64)}],
    ids=["missing", "another-version"],
)
def test_an_sbom_that_misses_an_installed_distribution_is_refused(
    installed: dict[str, tuple[str, str]],
) -> None:
    with pytest.raises(ReleaseError, match="the SBOM does not list"):
        _add_hashes(sbom(("PyJWT", "2.10.1")), installed)
