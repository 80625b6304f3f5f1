"""Shared code of the FineTune Gemma stages: settings, errors, the Gemma chat template, model loading."""

import logging

# bitsandbytes warns on every import, on CPUs with AVX512-BF16 (common in rented GPU servers), that an optional CPU
# kernel package is missing. We never run 4-bit on the CPU, so the line is only noise for our users.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
