#!/usr/bin/env bash
# Refresh the chat page's third-party JavaScript from npm, at exactly these versions:
#   bash piagent/web/vendor.sh
# then review `git diff piagent/web/static/vendor` and commit. Raise a version here to
# upgrade; tests/unit/test_web_vendor.py checks the files match these pins.
set -euo pipefail

MARKED=18.3.0      # Markdown to HTML (MIT)
DOMPURIFY=3.5.0    # HTML sanitiser (Apache-2.0 or MPL-2.0)

vendor="$(cd "$(dirname "$0")" && pwd)/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# npm pack checks each tarball against the integrity hash the registry publishes.
npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" >/dev/null
mkdir marked dompurify
tar -xzf "marked-$MARKED.tgz" -C marked
tar -xzf "dompurify-$DOMPURIFY.tgz" -C dompurify

rm -rf "$vendor"
mkdir -p "$vendor"
# The browser builds (UMD: each sets one global), without the source-map comment: the
# maps are not shipped, and a browser's developer tools would ask for them in vain.
strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1" >"$2"; }
strip_map marked/package/lib/marked.umd.js "$vendor/marked.umd.js"
strip_map dompurify/package/dist/purify.min.js "$vendor/purify.min.js"
cp marked/package/LICENSE "$vendor/marked.LICENSE"
cp dompurify/package/LICENSE "$vendor/dompurify.LICENSE"
cp dompurify/package/LICENSE-MPL "$vendor/dompurify.LICENSE-MPL"
echo "vendored marked $MARKED and DOMPurify $DOMPURIFY into $vendor"
