"""The ``trpc-kafka`` CLI and the local Apache Kafka broker (KRaft, jars from Maven Central)."""
