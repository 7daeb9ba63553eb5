"""What a demo or a test runs on: Java, the jars set-up fetches, and the local Apache Kafka broker."""
