"""Where things are, and the defaults every command starts from.

Flags win over the environment, which wins over these; the environment is read when a command runs, never at
import, so tests can set it per test.
"""

from __future__ import annotations

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO_DIR / "police-department-calls-for-service.json.gz"
DEFAULT_RADIO_CODES = REPO_DIR / "radio_code.json"
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_TOPIC = "calls"
CLIENTS = ("confluent", "kafka-python")
