"""Shared code of the FineTune Gemma stages: settings, errors, the Gemma chat template, model loading."""
