#!/usr/bin/env python3
"""Produces test records with confluent-kafka, an independent client.

Run it with scripts/clients.sh python scripts/produce.py ...

Input: one record per line of --input (NDJSON).
- Plain: the line is the value, byte for byte; the key is the value's --key-field
  (records that are not JSON objects, or lack the field, go without a key).
- --wrapped: each line is {"key": str|null, "value": ..., "headers": {name: str}}.
  A null value is a tombstone; a string value is sent as its UTF-8 bytes, and
  "value_base64" as the bytes it encodes (a corrupt record); anything else is
  serialized: as JSON by default, or by Confluent's Avro or Protobuf serializer
  (--format avro|protobuf), which registers the schema with --registry and frames
  the record (magic byte, schema id).
- With --format avro|protobuf, a plain line is the JSON form of the record to
  serialize.

The topic is created with --partitions when it does not exist. Records are keyed
with librdkafka's murmur2_random partitioner (the Java clients' default), and the
producer is flushed and checked: the script exits non-zero if a record was not
acknowledged.
"""

import argparse
import json
import sys

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--input", required=True, help="NDJSON file, one record per line")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--key-field", default="aggregateId")
    p.add_argument("--wrapped", action="store_true")
    p.add_argument("--format", choices=["json", "avro", "protobuf"], default="json")
    p.add_argument("--registry", help="schema registry URL (avro, protobuf)")
    p.add_argument("--registry-auth", help="USER:PASSWORD for the registry")
    p.add_argument("--schema", help="Avro schema (.avsc) or Protobuf (.proto) file")
    p.add_argument("--message", help="Protobuf message name in --schema")
    p.add_argument(
        "-X", dest="props", action="append", default=[], metavar="KEY=VALUE",
        help="librdkafka property for the producer and the admin client",
    )
    return p.parse_args()


def client_props(args):
    props = {"bootstrap.servers": args.brokers}
    for kv in args.props:
        k, _, v = kv.partition("=")
        props[k] = v
    return props


def ensure_topic(props, topic, partitions):
    admin_props = {
        k: v for k, v in props.items()
        if k.startswith(("bootstrap", "security", "ssl", "sasl"))
    }
    admin = AdminClient(admin_props)
    md = admin.list_topics(timeout=30)
    if topic in md.topics and not md.topics[topic].error:
        return
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    try:
        futures[topic].result(30)
    except KafkaException as e:
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise


def serializer(args):
    """A function value -> bytes for structured values, by --format."""
    if args.format == "json":
        return lambda value, topic: json.dumps(value, separators=(",", ":")).encode()
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    conf = {"url": args.registry}
    if args.registry_auth:
        conf["basic.auth.user.info"] = args.registry_auth
    registry = SchemaRegistryClient(conf)
    if args.format == "avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer

        with open(args.schema) as f:
            ser = AvroSerializer(registry, f.read())
        return lambda value, topic: ser(
            value, SerializationContext(topic, MessageField.VALUE)
        )
    import importlib
    import os
    import tempfile

    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from google.protobuf.json_format import ParseDict
    from grpc_tools import protoc

    # Compile the .proto files of the schema's folder (it and what it imports) to
    # Python (grpcio-tools' protoc), as a user's build would.
    out = tempfile.mkdtemp()
    folder, name = os.path.split(os.path.abspath(args.schema))
    protos = sorted(f for f in os.listdir(folder) if f.endswith(".proto"))
    if protoc.main(["protoc", f"-I{folder}", f"--python_out={out}", *protos]) != 0:
        sys.exit(f"produce.py: protoc failed on {args.schema}")
    sys.path.insert(0, out)
    module = importlib.import_module(name[: -len(".proto")] + "_pb2")
    cls = getattr(module, args.message)
    ser = ProtobufSerializer(cls, registry, {"use.deprecated.format": False})
    return lambda value, topic: ser(
        ParseDict(value, cls()), SerializationContext(topic, MessageField.VALUE)
    )


def records(args):
    with open(args.input, "rb") as f:
        for raw in f:
            raw = raw.rstrip(b"\n")
            if not raw:
                continue
            if args.wrapped:
                yield json.loads(raw)
                continue
            key = None
            obj = None
            try:
                obj = json.loads(raw)
                if isinstance(obj, dict) and isinstance(obj.get(args.key_field), str):
                    key = obj[args.key_field]
            except ValueError:
                pass
            if args.format != "json":
                yield {"key": key, "value": obj}
            else:
                yield {"key": key, "value": raw}


def main():
    args = parse_args()
    props = client_props(args)
    ensure_topic(props, args.topic, args.partitions)
    props.setdefault("partitioner", "murmur2_random")
    props.setdefault("linger.ms", "20")
    producer = Producer(props)
    serialize = serializer(args)
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(str(err))

    n = 0
    for rec in records(args):
        value = rec.get("value")
        if "value_base64" in rec:
            import base64
            value = base64.b64decode(rec["value_base64"])
        elif isinstance(value, str):
            value = value.encode()
        elif value is not None and not isinstance(value, bytes):
            value = serialize(value, args.topic)
        headers = [(k, None if v is None else str(v).encode())
                   for k, v in (rec.get("headers") or {}).items()]
        key = rec.get("key")
        while True:
            try:
                producer.produce(
                    args.topic, value=value, key=None if key is None else str(key).encode(),
                    headers=headers or None, on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
        producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        sys.exit(f"produce.py: {left} record(s) unsent, {len(failed)} failed: {failed[:3]}")
    print(f"produce.py: {n} record(s) to {args.topic}", file=sys.stderr)


if __name__ == "__main__":
    main()
