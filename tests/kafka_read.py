"""Reads a wearflow changelog topic and the alerts topic with confluent-kafka (librdkafka's
Python client, independent of wearflow's Rust client) and prints a JSON report:
{"changelog": {key: row without as_of, ...}, "alerts": [alert, ...]}.

Usage: kafka_read.py BROKERS CHANGELOG_TOPIC ALERTS_TOPIC
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition


def read_all(brokers, topic):
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "wearflow-python-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    open_partitions = set(partitions)
    messages = []
    deadline = time.time() + 60
    while open_partitions:
        if time.time() > deadline:
            raise SystemExit(f"{topic} not read to its end in time")
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                open_partitions.discard(msg.partition())
                continue
            raise SystemExit(f"reading {topic}: {msg.error()}")
        messages.append((msg.key(), msg.value()))
    consumer.close()
    return messages


def main():
    brokers, changelog_topic, alerts_topic = sys.argv[1:4]
    changelog = {}
    for key, value in read_all(brokers, changelog_topic):
        key = key.decode()
        if value is None:
            changelog.pop(key, None)
        else:
            row = json.loads(value)
            row.pop("as_of", None)
            changelog[key] = row
    alerts = [json.loads(value) for _, value in read_all(brokers, alerts_topic)]
    json.dump({"changelog": changelog, "alerts": alerts}, sys.stdout)


if __name__ == "__main__":
    main()
