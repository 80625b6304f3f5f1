#!/usr/bin/env bash
# Step 5: merge the best LoRA of the latest run into the base model (output/merged).
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" merge_lora.py "$@"
