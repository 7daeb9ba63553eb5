"""The course project's ProducerServer, kept as a small class over `sfcrime.producer`.

Usage:
    from producer_server import ProducerServer
    ProducerServer("police-department-calls-for-service.json.gz", topic="calls",
                   bootstrap_servers="localhost:9092").generate_data()
"""

from sfcrime.config import DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
from sfcrime.kafka_settings import KafkaSettings
from sfcrime.dataset import load_calls
from sfcrime.producer import Pacing, ReplaySummary, replay


class ProducerServer:
    """Replays a calls file into a topic; `generate_data()` returns what was delivered and what failed."""

    def __init__(self, input_file, topic=DEFAULT_TOPIC, bootstrap_servers=DEFAULT_BOOTSTRAP, client="confluent",
                 rate=None, speedup=None, order="event-time", partitions=3, **kafka_config):
        self.input_file = input_file
        self.settings = KafkaSettings(bootstrap_servers=bootstrap_servers, topic=topic, client=client,
                                      properties={k.replace("_", "."): str(v) for k, v in kafka_config.items()})
        self.pacing = Pacing(rate=rate, speedup=speedup)
        self.order = order
        self.partitions = partitions

    def generate_data(self, limit=None, progress=False) -> ReplaySummary:
        calls = load_calls(self.input_file, order=self.order, limit=limit)
        return replay(calls, self.settings, self.pacing, self.partitions, progress=progress)
