"""The vendored JavaScript is what piagent/web/vendor.sh pins, with its licences."""

from __future__ import annotations

import re

from piagent.web.routes import STATIC_DIR

VENDOR = STATIC_DIR / "vendor"
SCRIPT = STATIC_DIR.parent / "vendor.sh"


def pinned(name: str) -> str:
    return re.search(rf"^{name}=(\S+)", SCRIPT.read_text(), re.M).group(1)


def test_vendored_files_are_the_pinned_versions():
    marked = (VENDOR / "marked.umd.js").read_text()
    purify = (VENDOR / "purify.min.js").read_text()
    assert re.search(r"^ \* marked v(\S+) - a markdown parser$", marked, re.M).group(1) == (
        pinned("MARKED")
    )
    assert re.match(r"/\*! @license DOMPurify (\S+) ", purify).group(1) == pinned("DOMPURIFY")


def test_every_vendored_library_ships_with_its_licence():
    assert "MIT" in (VENDOR / "marked.LICENSE").read_text()
    assert "Apache License" in (VENDOR / "dompurify.LICENSE").read_text()
    assert "Mozilla Public License" in (VENDOR / "dompurify.LICENSE-MPL").read_text()


def test_vendored_scripts_point_at_no_source_map():
    for script in VENDOR.glob("*.js"):
        assert "sourceMappingURL" not in script.read_text(), script.name
