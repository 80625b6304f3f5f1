#!/usr/bin/env bash
# The whole pipeline on the bundled sample data with the offline Gemma 3 270M demo model.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" run_demo.py "$@"
