#!/usr/bin/env bash
# Step 2: download a base Gemma model into models/ (menu), or --demo for the offline demo model.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" download_model.py "$@"
