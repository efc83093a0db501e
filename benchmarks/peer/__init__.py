"""Helpers of ``benchmarks/peer_recbole.py`` (which puts ``benchmarks/`` on ``sys.path`` by being run
from there): ``recbole_venv`` (RecBole's virtualenv) and ``report`` (time to quality, the Markdown and
JSON files). ``recbole_driver.py`` is not part of it: it runs as a script in RecBole's venv and
imports nothing from here."""

from __future__ import annotations


class PeerError(RuntimeError):
    """A step of the comparison failed; the message says which and what to do."""
