"""Read the `calls` topic like kafka-console-consumer, or verify it against the source file.

Usage:
    python consumer_server.py --from-beginning --max-messages 5 --pretty
    python consumer_server.py --verify --input police-department-calls-for-service.json.gz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sfcrime.cli import main

if __name__ == "__main__":
    sys.exit(main(command="consume"))
