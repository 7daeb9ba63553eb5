"""Replay police-department-calls-for-service.json into the `calls` topic, oldest call first.

Usage:
    python kafka_server.py                      # the bundled dataset, max speed, to localhost:9092
    python kafka_server.py --speedup 3600       # one hour of calls per second of wall time
    python kafka_server.py --rate 500 --limit 10000 --bootstrap-servers broker:9092
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sfcrime.cli import main

if __name__ == "__main__":
    sys.exit(main(command="produce"))
