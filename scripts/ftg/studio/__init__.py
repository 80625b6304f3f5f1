"""Studio: the local web page over the same stages (scripts/studio.py starts it).

It runs each stage script as its own process, with the launchers' arguments, and reads the files they write; it
holds no state a restart would lose (ARCHITECTURE.md).
"""
