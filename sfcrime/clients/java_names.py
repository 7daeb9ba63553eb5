"""Our Kafka properties (librdkafka's names) in the Java client's names: Spark's connector and Kafka's own tools."""

from __future__ import annotations

_JAAS_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


def java_client_config(properties: dict[str, str]) -> dict[str, str]:
    """Translate librdkafka property names into the Java client's, for Spark's Kafka connector.

    sasl.username/password become a sasl.jaas.config; a PEM CA file becomes a PEM truststore. Names the
    Java client shares (security.protocol, sasl.mechanism, ...) and Java-only ones pass through unchanged.
    """
    config = dict(properties)
    user, password = config.pop("sasl.username", None), config.pop("sasl.password", None)
    if user is not None and "sasl.jaas.config" not in config:
        module = _JAAS_MODULES.get(config.get("sasl.mechanism", "PLAIN").upper(), _JAAS_MODULES["PLAIN"])
        quoted = [v.replace("\\", "\\\\").replace('"', '\\"') for v in (user, password or "")]
        config["sasl.jaas.config"] = f'{module} required username="{quoted[0]}" password="{quoted[1]}";'
    ca = config.pop("ssl.ca.location", None)
    if ca is not None and "ssl.truststore.location" not in config:
        config.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": ca})
    return config
