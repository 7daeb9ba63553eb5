"""SF crime: Spark Structured Streaming over the `calls` topic.

Answers the top crime types per event-time window, the crime density by location and the
dispositions, counting each call exactly once; results persist under --output (default out/).

Usage:
    spark-submit data_stream.py --once                    # everything in the topic now, then exit
    python data_stream.py --trigger "10 seconds"          # run live until Ctrl-C
    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 data_stream.py  # the classic form

Expected output: a progress line per micro-batch (rows, rates, watermark in San Francisco time, duplicates,
backlog) and the top crime types of the last final window and of the open one; then
`python -m sfcrime report --output out` prints the answers.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # spark-submit runs us from anywhere

from sfcrime.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(command="stream"))
