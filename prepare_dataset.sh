#!/usr/bin/env bash
# Step 3: turn the chat exports in dataset/ into data/train_dataset.jsonl and data/eval_dataset.jsonl.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" prepare_conversation_data.py "$@"
