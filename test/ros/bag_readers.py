"""Two independent readers of an episode bag, for the recorder tests: rosbags' AnyReader and
the `mcap` library with its ROS 2 decoder (a plain module, imported by the test files)."""
from pathlib import Path

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader


def bag_messages(bag: Path) -> dict[str, list]:
    """topic -> [(log time ns, decoded message)] read with rosbags."""
    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        for connection, timestamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append((timestamp, reader.deserialize(raw, connection.msgtype)))
    return out


def mcap_counts(bag: Path) -> dict[str, int]:
    """topic -> messages decoded by the mcap library's ROS 2 decoder from the schemas in the file."""
    (path,) = bag.glob("*.mcap")
    counts: dict[str, int] = {}
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema is not None and schema.encoding == "ros2msg" and schema.data
            assert decoded is not None
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    return counts
