"""Configuration: the YAML file, the Kafka address string, defaults, librdkafka settings."""
