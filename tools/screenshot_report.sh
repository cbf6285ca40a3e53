#!/usr/bin/env bash
# Screenshot a report page in headless Chromium, to look at it as a reader would.
# Usage: tools/screenshot_report.sh runs/catapult/report.html [shot.png] [height]
# Needs chromium (apt-get install -y chromium). The page must render with no network: --no-sandbox only for root.
set -euo pipefail
page=$(realpath "$1")
shot=${2:-shot.png}
height=${3:-3000}
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,"$height" \
  --screenshot="$shot" "file://$page" 2>/dev/null
echo "$shot"
