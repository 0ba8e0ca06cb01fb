"""The vendored Swagger UI is what piagent/docs/vendor.sh pins, with its licences."""

from __future__ import annotations

import re
from pathlib import Path

import piagent.docs

DOCS = Path(piagent.docs.__file__).resolve().parent
VENDOR = DOCS / "static" / "vendor"


def test_the_vendored_bundle_is_the_pinned_version():
    pinned = re.search(r"^SWAGGER_UI=(\S+)", (DOCS / "vendor.sh").read_text(), re.M).group(1)
    bundle = (VENDOR / "swagger-ui-bundle.js").read_text()
    assert re.search(r'PACKAGE_VERSION:"([^"]+)"', bundle).group(1) == pinned


def test_swagger_ui_ships_with_its_licences():
    assert "Apache License" in (VENDOR / "swagger-ui.LICENSE").read_text()
    assert "SmartBear" in (VENDOR / "swagger-ui.NOTICE").read_text()
    assert "@license" in (VENDOR / "swagger-ui-bundle.js.LICENSE.txt").read_text()


def test_vendored_files_point_at_no_source_map():
    for path in (VENDOR / "swagger-ui-bundle.js", VENDOR / "swagger-ui.css"):
        assert "sourceMappingURL" not in path.read_text(), path.name
