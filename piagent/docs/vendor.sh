#!/usr/bin/env bash
# Refresh the API docs page's Swagger UI from npm, at exactly this version:
#   bash piagent/docs/vendor.sh
# then review `git diff piagent/docs/static/vendor` and commit. Raise the version here to
# upgrade; tests/unit/test_docs_vendor.py checks the files match this pin.
set -euo pipefail

SWAGGER_UI=5.35.0  # swagger-ui-dist: the interactive OpenAPI page (Apache-2.0)

vendor="$(cd "$(dirname "$0")" && pwd)/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# npm pack checks the tarball against the integrity hash the registry publishes.
npm pack --silent "swagger-ui-dist@$SWAGGER_UI" >/dev/null
tar -xzf "swagger-ui-dist-$SWAGGER_UI.tgz"

rm -rf "$vendor"
mkdir -p "$vendor"
# The browser bundle (one global, SwaggerUIBundle) and its style sheet, without the
# source-map comments: the maps are not shipped, and developer tools would ask in vain.
strip_map() { sed 's#/\*\# sourceMappingURL=[^*]*\*/##; /^\/\/# sourceMappingURL=/d' "$1" >"$2"; }
strip_map package/swagger-ui-bundle.js "$vendor/swagger-ui-bundle.js"
strip_map package/swagger-ui.css "$vendor/swagger-ui.css"
cp package/LICENSE "$vendor/swagger-ui.LICENSE"
cp package/NOTICE "$vendor/swagger-ui.NOTICE"
# The licences of what the bundle includes from other packages.
cp package/swagger-ui-bundle.js.LICENSE.txt "$vendor/swagger-ui-bundle.js.LICENSE.txt"
echo "vendored swagger-ui-dist $SWAGGER_UI into $vendor"
