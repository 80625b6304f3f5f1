#!/usr/bin/env bash
# Step 4: train a LoRA on data/ (run it again to resume after a stop).
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" pipeline.py train "$@"
